// Pure helpers that fold SSE `deployments` and `instances` events into deployment details.
import type { DeploymentDetail, Instance } from '../api/types'
import { replaceOrAppend } from './live'

/**
 * Folds one SSE `deployments` or `instances` event into the list. Returns `null` when the
 * event names a deployment the list does not know yet (the caller refetches).
 */
export function applyDeploymentEvent(
  list: readonly DeploymentDetail[],
  topic: 'deployments' | 'instances',
  data: unknown,
): DeploymentDetail[] | null {
  const event = data as { deploymentId?: string; deleted?: boolean } | null
  if (!event?.deploymentId) return [...list]
  const index = list.findIndex((d) => d.deploymentId === event.deploymentId)
  if (topic === 'deployments' && event.deleted) return list.filter((_, i) => i !== index)
  if (index < 0) return null
  const current = list[index]
  const next =
    topic === 'deployments'
      ? { ...current, ...(data as object), instances: current.instances }
      : { ...current, instances: replaceOrAppend(current.instances, data as Instance, 'instanceId') }
  const copy = [...list]
  copy[index] = next
  return copy
}

/** Instances per phase, e.g. `{Running: 2, Pending: 1}`, in a stable phase order. */
export function phaseCounts(instances: readonly Instance[]): [string, number][] {
  const order = ['Running', 'Pending', 'Failed', 'Completed', 'Stopped']
  const counts = new Map<string, number>()
  for (const i of instances) counts.set(i.phase, (counts.get(i.phase) ?? 0) + 1)
  const rank = (p: string) => (order.includes(p) ? order.indexOf(p) : order.length)
  return [...counts].sort((a, b) => rank(a[0]) - rank(b[0]))
}

/** The replicas of all entries on all nodes. */
export function totalReplicas(entries: readonly { replicas: Record<string, number> }[]): number {
  return entries.reduce((sum, e) => sum + Object.values(e.replicas).reduce((a, b) => a + b, 0), 0)
}
