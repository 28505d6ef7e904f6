export interface UptimeUnits {
  d: string
  h: string
  m: string
  s: string
}

const pad = (n: number) => String(n).padStart(2, '0')

/**
 * Formats a duration in seconds as `1h 02m 03s` (with English units) or `1小时 02分 03秒`
 * (with Chinese units); days lead when there are any: `2d 01h 02m 03s`.
 * Negative or non-finite input counts as zero; fractions are dropped.
 */
export function formatUptime(seconds: number, units: UptimeUnits): string {
  const total = Number.isFinite(seconds) && seconds > 0 ? Math.floor(seconds) : 0
  const d = Math.floor(total / 86400)
  const h = Math.floor((total % 86400) / 3600)
  const m = Math.floor((total % 3600) / 60)
  const s = total % 60
  const hms = `${d ? pad(h) : h}${units.h} ${pad(m)}${units.m} ${pad(s)}${units.s}`
  return d ? `${d}${units.d} ${hms}` : hms
}
