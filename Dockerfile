# Image for both the webhook (gunicorn) and the RQ worker (python worker.py);
# docker-compose.yml picks the command. No secrets in here: they come from
# .env at run time.
#
# Reproducible: the base image is pinned to an exact tag and the Python packages
# to exact versions with hashes (requirements.lock). README.md, "Security and
# privacy", says how to update both.
FROM python:3.11.17-slim-bookworm

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies in their own layer: rebuilt only when the lock file changes.
# --require-hashes: pip refuses any file whose hash is not in the lock.
COPY requirements.lock .
RUN pip install --no-cache-dir --require-hashes -r requirements.lock

# Unprivileged user. The code stays owned by root, so the app cannot modify it.
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --create-home --home-dir /home/app app

# The application (.dockerignore lets in only what the image needs).
COPY . .

USER app

EXPOSE 8000

CMD ["gunicorn", "webhook:app", "--bind", "0.0.0.0:8000", "--workers", "2", "--threads", "4", "--timeout", "30", "--worker-tmp-dir", "/dev/shm", "--no-control-socket"]
