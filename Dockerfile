# Image for both the webhook (gunicorn) and the RQ worker (python worker.py);
# docker-compose.yml picks the command. No secrets in here: they come from
# .env at run time.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies in their own layer: rebuilt only when requirements.txt changes.
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt

# Unprivileged user. The code stays owned by root, so the app cannot modify it.
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --create-home --home-dir /home/app app

# The application (see .dockerignore for what is left out). prompts/ belongs to the app
# user: the panel edits it (in compose it is a volume seeded from here).
COPY . .
RUN chown -R app:app prompts

USER app

EXPOSE 8000

CMD ["gunicorn", "webhook:app", "--bind", "0.0.0.0:8000", "--workers", "2", "--threads", "4", "--timeout", "30"]
