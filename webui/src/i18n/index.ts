// vue-i18n set-up, the language choice (remembered in localStorage) and Element Plus's locale.
import { computed } from 'vue'
import { createI18n } from 'vue-i18n'
import elementEn from 'element-plus/es/locale/lang/en'
import elementZh from 'element-plus/es/locale/lang/zh-cn'
import en from './en'
import zh from './zh'

export type Locale = 'en' | 'zh'
export const LOCALES: { value: Locale; label: string }[] = [
  { value: 'en', label: 'English' },
  { value: 'zh', label: '中文' },
]
export const LOCALE_KEY = 'plum.locale'

const HTML_LANG: Record<Locale, string> = { en: 'en', zh: 'zh-CN' }
const ELEMENT_LOCALES = { en: elementEn, zh: elementZh }

function isLocale(value: unknown): value is Locale {
  return value === 'en' || value === 'zh'
}

/** The saved choice if there is one, else Chinese for a zh* browser language, else English. */
export function detectLocale(saved: string | null, browserLanguage: string | undefined): Locale {
  if (isLocale(saved)) return saved
  return browserLanguage?.toLowerCase().startsWith('zh') ? 'zh' : 'en'
}

export const i18n = createI18n({
  legacy: false,
  locale: detectLocale(localStorage.getItem(LOCALE_KEY), navigator.language),
  fallbackLocale: 'en',
  messages: { en, zh },
})

export const currentLocale = computed(() => i18n.global.locale.value as Locale)
export const elementLocale = computed(() => ELEMENT_LOCALES[currentLocale.value])

export function applyHtmlLang(): void {
  document.documentElement.lang = HTML_LANG[currentLocale.value]
}

/** Switches the language and remembers it for the next visit. */
export function setLocale(locale: Locale): void {
  i18n.global.locale.value = locale
  localStorage.setItem(LOCALE_KEY, locale)
  applyHtmlLang()
}
