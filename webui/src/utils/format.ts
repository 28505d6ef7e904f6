const BYTE_UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB']

/** `1536` → `1.5 KiB`; three significant digits at most, whole numbers from 100 up. */
export function formatBytes(bytes: number): string {
  let value = Math.max(0, bytes)
  let unit = 0
  while (value >= 1024 && unit < BYTE_UNITS.length - 1) {
    value /= 1024
    unit++
  }
  const digits = unit === 0 || value >= 100 ? 0 : value >= 10 ? 1 : 2
  return `${Number(value.toFixed(digits))} ${BYTE_UNITS[unit]}`
}

/** `12.345` → `12.3%`. */
export function formatPercent(percent: number): string {
  return `${Number(percent.toFixed(1))}%`
}

/** The first 8 characters of an id. */
export function shortId(id: string): string {
  return id.slice(0, 8)
}

/**
 * The time between two Unix-second stamps (`finishedAt` defaults to `now` for work still
 * running): `850ms`, `12.3s`, `4m 05s`, `2h 03m`. Empty when it has not started.
 */
export function formatDuration(
  startedAt: number | null | undefined,
  finishedAt: number | null | undefined,
  now: number,
): string {
  if (startedAt == null) return ''
  const ms = Math.max(0, Math.round(((finishedAt ?? now) - startedAt) * 1000))
  if (ms < 1000) return `${ms}ms`
  const seconds = ms / 1000
  if (seconds < 60) return `${Number(seconds.toFixed(1))}s`
  const whole = Math.floor(seconds)
  const pad = (n: number) => String(n).padStart(2, '0')
  if (whole < 3600) return `${Math.floor(whole / 60)}m ${pad(whole % 60)}s`
  return `${Math.floor(whole / 3600)}h ${pad(Math.floor((whole % 3600) / 60))}m`
}
