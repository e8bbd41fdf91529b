"""When the bot may answer: BUSINESS_HOURS in BUSINESS_TIMEZONE, and BOT_ACTIVE saying which side of them.

Pure functions, except `closed_notice_due`, which takes the Redis connection. Many shops want the
bot only when nobody is at the counter (`BOT_ACTIVE=outside_business_hours`).
"""

import re
from datetime import datetime, time as dtime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

BOT_ACTIVE_CHOICES = ("always", "outside_business_hours", "during_business_hours")

# English and Portuguese day names (with and without accents) → weekday (Monday is 0).
DAYS = {
    "mon": 0, "tue": 1, "wed": 2, "thu": 3, "fri": 4, "sat": 5, "sun": 6,
    "seg": 0, "ter": 1, "qua": 2, "qui": 3, "sex": 4, "sab": 5, "sáb": 5, "dom": 6,
}
_RANGE = re.compile(r"^([a-zá]+)(?:\s*-\s*([a-zá]+))?\s+(\d{1,2})[:h](\d{2})\s*-\s*(\d{1,2})[:h](\d{2})$")


def parse_business_hours(text):
    """`mon-fri 08:00-18:00, sat 08:00-12:00` → {weekday: [(start, end), ...]} in minutes after midnight.

    Day ranges may wrap (`sat-mon`); `24:00` ends a day. Raises ValueError with a pt-BR message saying
    which part is wrong (the owner reads it), for config.py to turn into a SettingsError naming BUSINESS_HOURS.
    """
    schedule = {}
    for part in filter(None, (chunk.strip().lower() for chunk in (text or "").replace(";", ",").split(","))):
        match = _RANGE.match(part)
        if not match:
            raise ValueError(f"não entendi {part!r}: escreva como 'seg-sex 08:00-18:00'")
        first, last, h1, m1, h2, m2 = match.groups()
        for day in (first, last or first):
            if day not in DAYS:
                raise ValueError(f"dia desconhecido {day!r} em {part!r}: use seg, ter, qua, qui, sex, sab, dom (ou mon…sun)")
        start, end = _clock(h1, m1, part), _clock(h2, m2, part)
        if end <= start:
            raise ValueError(f"{part!r} termina antes de começar (um horário que passa da meia-noite: separe por dia)")
        day, stop = DAYS[first], DAYS[last or first]
        while True:
            schedule.setdefault(day, []).append((start, end))
            if day == stop:
                break
            day = (day + 1) % 7
    return schedule


def _clock(hours, minutes, part):
    """Minutes after midnight; 24:00 is allowed as the end of a day."""
    hours, minutes = int(hours), int(minutes)
    if minutes > 59 or hours > 24 or (hours == 24 and minutes):
        raise ValueError(f"{hours:02d}:{minutes:02d} em {part!r} não é uma hora do dia")
    return hours * 60 + minutes


def timezone(name):
    """The zoneinfo zone, or ValueError naming it (the image carries the `tzdata` package)."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"fuso horário desconhecido {name!r}") from None


def is_business_time(settings, now_utc):
    """Whether `now_utc` (an aware datetime) falls inside BUSINESS_HOURS, in BUSINESS_TIMEZONE."""
    local = now_utc.astimezone(timezone(settings.business_timezone))
    minute = local.hour * 60 + local.minute
    return any(start <= minute < end for start, end in parse_business_hours(settings.business_hours).get(local.weekday(), ()))


def bot_active(settings, now_utc):
    """Whether the bot answers customers at `now_utc`, following BOT_ACTIVE."""
    if settings.bot_active == "always":
        return True
    inside = is_business_time(settings, now_utc)
    return inside if settings.bot_active == "during_business_hours" else not inside


def closed_notice_due(redis, cid, settings, now_utc):
    """True the first time a chat writes while the bot is off today: send CLOSED_MESSAGE then, never again that day.

    One `SET NX` expiring at the end of the local day, so several workers agree on who sends it.
    """
    if not settings.closed_message:
        return False
    local = now_utc.astimezone(timezone(settings.business_timezone))
    midnight = datetime.combine(local.date() + timedelta(days=1), dtime(0), tzinfo=local.tzinfo)
    seconds = max(int((midnight - local).total_seconds()), 1)
    return bool(redis.set(f"wa:closed:{cid}:{local.date().isoformat()}", 1, nx=True, ex=seconds))


def next_opening(settings, now_utc):
    """The first moment at or after `now_utc` inside BUSINESS_HOURS (an aware datetime), or None without hours.

    Used to hold a follow-up (followup.py) until the shop opens again.
    """
    schedule = parse_business_hours(settings.business_hours)
    if not schedule:
        return None
    zone = timezone(settings.business_timezone)
    local = now_utc.astimezone(zone)
    for offset in range(8):
        day = local.date() + timedelta(days=offset)
        for start, end in sorted(schedule.get(day.weekday(), ())):
            opens = datetime.combine(day, dtime(0), tzinfo=zone) + timedelta(minutes=start)
            closes = datetime.combine(day, dtime(0), tzinfo=zone) + timedelta(minutes=end)
            if closes > local:
                return max(opens, local)
    return None
