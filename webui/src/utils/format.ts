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
