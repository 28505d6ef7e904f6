import { createRouter, createWebHistory, type RouteComponent, type RouteRecordRaw } from 'vue-router'
import { PAGES, pagePath, type PageKey } from './pages'
import HomePage from './views/HomePage.vue'

type Lazy = () => Promise<RouteComponent>

/** Pages built so far; the others show PlaceholderPage. Pages past Home load on first visit. */
const BUILT: Partial<Record<PageKey, RouteComponent | Lazy>> = {
  home: HomePage,
  nodes: () => import('./views/NodesPage.vue'),
}
const PlaceholderPage: Lazy = () => import('./views/PlaceholderPage.vue')

const routes: RouteRecordRaw[] = PAGES.map((page) => {
  const component = BUILT[page]
  return {
    path: pagePath(page),
    name: page,
    meta: { page },
    ...(component ? { component } : { component: PlaceholderPage, props: { page } }),
  }
})

export const router = createRouter({
  history: createWebHistory(),
  routes: [...routes, { path: '/:unknown(.*)*', redirect: '/' }],
})
