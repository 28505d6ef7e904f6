import { useI18n } from 'vue-i18n'

/** Formats Unix-second stamps in the current language; `—` when there is none. */
export function useTimeFormat(): (seconds: number | null | undefined) => string {
  const { t, locale } = useI18n()
  return (seconds) =>
    seconds == null
      ? t('common.none')
      : new Date(seconds * 1000).toLocaleString(locale.value === 'zh' ? 'zh-CN' : 'en', {
          dateStyle: 'short',
          timeStyle: 'medium',
        })
}
