// The dashboard's pages, in menu order. Routes, the menu and the i18n keys all come from here.
export const PAGES = [
  'home',
  'nodes',
  'apps',
  'deployments',
  'instances',
  'services',
  'tasks',
  'workers',
  'workflows',
  'runs',
  'schedules',
  'kv',
  'resources',
] as const

export type PageKey = (typeof PAGES)[number]

export function pagePath(key: PageKey): string {
  return key === 'home' ? '/' : `/${key}`
}
