import { describe, expect, it } from 'vitest'
import en from '../src/i18n/en'
import zh from '../src/i18n/zh'
import { formatUptime } from '../src/utils/uptime'

describe('formatUptime', () => {
  it('formats hours, minutes and seconds in English', () => {
    expect(formatUptime(3723, en.uptime)).toBe('1h 02m 03s')
    expect(formatUptime(0, en.uptime)).toBe('0h 00m 00s')
    expect(formatUptime(59.9, en.uptime)).toBe('0h 00m 59s')
    expect(formatUptime(23 * 3600 + 59 * 60 + 59, en.uptime)).toBe('23h 59m 59s')
  })

  it('formats in Chinese', () => {
    expect(formatUptime(3723, zh.uptime)).toBe('1小时 02分 03秒')
  })

  it('leads with days once there are any', () => {
    expect(formatUptime(86400, en.uptime)).toBe('1d 00h 00m 00s')
    expect(formatUptime(2 * 86400 + 3723, en.uptime)).toBe('2d 01h 02m 03s')
    expect(formatUptime(2 * 86400 + 3723, zh.uptime)).toBe('2天 01小时 02分 03秒')
  })

  it('treats negative and invalid durations as zero', () => {
    expect(formatUptime(-5, en.uptime)).toBe('0h 00m 00s')
    expect(formatUptime(Number.NaN, en.uptime)).toBe('0h 00m 00s')
  })
})
