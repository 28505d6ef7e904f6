import { createApp } from 'vue'
import 'element-plus/dist/index.css'
import App from './App.vue'
import { connect } from './api/stream'
import { i18n } from './i18n'
import { router } from './router'

createApp(App).use(i18n).use(router).mount('#app')
connect()
