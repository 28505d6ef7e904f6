import { createRouter, createWebHistory, type RouteComponent, type RouteRecordRaw } from 'vue-router'
import { PAGES, pagePath, type PageKey } from './pages'
import HomePage from './views/HomePage.vue'

type Lazy = () => Promise<RouteComponent>

/** Pages built so far; the others show PlaceholderPage. Pages past Home load on first visit. */
const BUILT: Partial<Record<PageKey, RouteComponent | Lazy>> = {
  home: HomePage,
  nodes: () => import('./views/NodesPage.vue'),
  apps: () => import('./views/AppsPage.vue'),
  deployments: () => import('./views/DeploymentsPage.vue'),
  instances: () => import('./views/InstancesPage.vue'),
  tasks: () => import('./views/TasksPage.vue'),
  workflows: () => import('./views/WorkflowsPage.vue'),
  runs: () => import('./views/RunsPage.vue'),
  workers: () => import('./views/WorkersPage.vue'),
  services: () => import('./views/ServicesPage.vue'),
  schedules: () => import('./views/SchedulesPage.vue'),
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
  routes: [
    ...routes,
    {
      path: '/runs/:runId',
      name: 'run',
      meta: { page: 'runs' },
      component: () => import('./views/RunPage.vue'),
      props: true,
    },
    { path: '/:unknown(.*)*', redirect: '/' },
  ],
})
