import { describe, expect, it } from 'vitest'
import en from '../src/i18n/en'
import zh from '../src/i18n/zh'
import { detectLocale } from '../src/i18n'
import { PAGES } from '../src/pages'

/** Every leaf of a message tree as a dotted key, mapped to its value. */
function leaves(tree: object, prefix = ''): Map<string, unknown> {
  const out = new Map<string, unknown>()
  for (const [key, value] of Object.entries(tree)) {
    const path = prefix ? `${prefix}.${key}` : key
    if (value !== null && typeof value === 'object') {
      leaves(value, path).forEach((v, k) => out.set(k, v))
    } else {
      out.set(path, value)
    }
  }
  return out
}

describe('messages', () => {
  const enLeaves = leaves(en)
  const zhLeaves = leaves(zh)

  it('have the same keys in English and Chinese', () => {
    expect([...zhLeaves.keys()].sort()).toEqual([...enLeaves.keys()].sort())
  })

  it('are non-empty strings', () => {
    for (const value of [...enLeaves.values(), ...zhLeaves.values()]) {
      expect(typeof value === 'string' && value.length > 0).toBe(true)
    }
  })

  it('name and describe every page', () => {
    for (const page of PAGES) {
      for (const leaf of [enLeaves, zhLeaves]) {
        expect(leaf.has(`pages.${page}.title`)).toBe(true)
        expect(leaf.has(`pages.${page}.description`)).toBe(true)
      }
    }
  })
})

describe('detectLocale', () => {
  it('prefers the saved choice', () => {
    expect(detectLocale('zh', 'en-US')).toBe('zh')
    expect(detectLocale('en', 'zh-CN')).toBe('en')
  })

  it('falls back to the browser language', () => {
    expect(detectLocale(null, 'zh-CN')).toBe('zh')
    expect(detectLocale(null, 'zh-TW')).toBe('zh')
    expect(detectLocale(null, 'ZH')).toBe('zh')
    expect(detectLocale(null, 'en-GB')).toBe('en')
    expect(detectLocale(null, 'fr')).toBe('en')
    expect(detectLocale('klingon', undefined)).toBe('en')
  })
})
