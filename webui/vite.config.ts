import { defineConfig } from 'vitest/config'
import vue from '@vitejs/plugin-vue'

const controller = 'http://127.0.0.1:8080'

export default defineConfig({
  plugins: [vue()],
  build: {
    // The controller serves the dashboard from plum/web/dist (git-ignored).
    outDir: '../plum/web/dist',
    emptyOutDir: true,
  },
  server: {
    proxy: {
      '/v1': { target: controller, changeOrigin: true },
      '/healthz': { target: controller, changeOrigin: true },
    },
  },
  test: {
    environment: 'jsdom',
    include: ['tests/**/*.test.ts'],
  },
})
