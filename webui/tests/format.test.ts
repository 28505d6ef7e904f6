import { describe, expect, it } from 'vitest'
import { formatBytes, formatPercent } from '../src/utils/format'

describe('formatBytes', () => {
  it('picks a binary unit and keeps about three significant digits', () => {
    expect(formatBytes(0)).toBe('0 B')
    expect(formatBytes(1023)).toBe('1023 B')
    expect(formatBytes(1536)).toBe('1.5 KiB')
    expect(formatBytes(457068544)).toBe('436 MiB')
    expect(formatBytes(25276510208)).toBe('23.5 GiB')
    expect(formatBytes(5 * 1024 ** 5)).toBe('5 PiB')
  })
})

describe('formatPercent', () => {
  it('keeps one decimal', () => {
    expect(formatPercent(0)).toBe('0%')
    expect(formatPercent(1.84)).toBe('1.8%')
    expect(formatPercent(100)).toBe('100%')
  })
})
