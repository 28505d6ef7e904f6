// Every deployment with its instances, fetched over REST and kept live by SSE events.
import { api } from '../api/client'
import type { DeploymentDetail } from '../api/types'
import { applyDeploymentEvent } from '../utils/deployments'
import { useLiveResource, type LiveResource } from './useLiveResource'
import { useSubscription } from './useSubscription'

/** There is no list route for instances: they come from each deployment's detail. */
async function loadDetails(): Promise<DeploymentDetail[]> {
  const list = await api.deployments()
  return Promise.all(list.map((d) => api.deployment(d.deploymentId)))
}

export function useDeployments(): LiveResource<DeploymentDetail[]> {
  const resource = useLiveResource(loadDetails, [])
  const { data, loading, reload, set } = resource
  for (const topic of ['deployments', 'instances'] as const) {
    useSubscription(topic, (event) => {
      if (loading.value || !data.value) return void reload()
      const next = applyDeploymentEvent(data.value, topic, event)
      if (next) set(next)
      else void reload()
    })
  }
  return resource
}
