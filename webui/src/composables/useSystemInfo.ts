// Controller facts for the Home page, live: refetched whenever a node changes.
import { computed, ref, watch } from 'vue'
import { api } from '../api/client'
import { useLiveResource } from './useLiveResource'
import { useNow } from './useNow'

export function useSystemInfo() {
  const resource = useLiveResource(api.systemInfo, ['nodes'])

  // How far the client's clock is ahead of the server's, so uptime does not depend on it.
  const clockOffset = ref(0)
  watch(resource.data, (info) => {
    if (info) clockOffset.value = Date.now() / 1000 - info.now
  })

  const now = useNow()
  const uptimeSeconds = computed(() => {
    const info = resource.data.value
    return info ? now.value - clockOffset.value - info.startedAt : undefined
  })

  return { ...resource, uptimeSeconds }
}
