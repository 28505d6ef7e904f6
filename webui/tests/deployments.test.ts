import { describe, expect, it } from 'vitest'
import type { DeploymentDetail, Instance } from '../src/api/types'
import { applyDeploymentEvent, phaseCounts, totalReplicas } from '../src/utils/deployments'

const instance = (id: string, phase: Instance['phase'], deploymentId = 'd1'): Instance => ({
  instanceId: id,
  deploymentId,
  nodeId: 'vm',
  desired: 'Running',
  phase,
  entry: 0,
  restarts: 0,
  exitCode: null,
  pid: null,
  healthy: false,
  message: '',
  lastReportAt: null,
  replacedBy: '',
  createdAt: 1,
})

const deployment = (id: string, instances: Instance[]): DeploymentDetail => ({
  deploymentId: id,
  name: id,
  state: 'Stopped',
  entries: [{ replicas: { vm: 2, other: 1 } }],
  labels: {},
  createdAt: 1,
  updatedAt: 1,
  instances,
})

describe('applyDeploymentEvent', () => {
  const list = [deployment('d1', [instance('i1', 'Stopped')]), deployment('d2', [])]

  it('updates a deployment and keeps its instances', () => {
    const next = applyDeploymentEvent(list, 'deployments', { ...list[0], state: 'Running', instances: undefined })
    expect(next?.[0].state).toBe('Running')
    expect(next?.[0].instances).toEqual(list[0].instances)
  })

  it('removes a deleted deployment', () => {
    const next = applyDeploymentEvent(list, 'deployments', { deploymentId: 'd1', deleted: true })
    expect(next?.map((d) => d.deploymentId)).toEqual(['d2'])
  })

  it('replaces or adds an instance of a known deployment', () => {
    const changed = applyDeploymentEvent(list, 'instances', instance('i1', 'Running'))
    expect(changed?.[0].instances.map((i) => i.phase)).toEqual(['Running'])
    const added = applyDeploymentEvent(list, 'instances', instance('i2', 'Pending', 'd2'))
    expect(added?.[1].instances.map((i) => i.instanceId)).toEqual(['i2'])
    expect(list[0].instances[0].phase).toBe('Stopped') // input untouched
  })

  it('asks for a refetch when the deployment is unknown', () => {
    expect(applyDeploymentEvent(list, 'deployments', { ...list[0], deploymentId: 'd9' })).toBeNull()
    expect(applyDeploymentEvent(list, 'instances', instance('i9', 'Running', 'd9'))).toBeNull()
  })
})

describe('phaseCounts and totalReplicas', () => {
  it('counts instances per phase in a stable order', () => {
    const all = [instance('a', 'Stopped'), instance('b', 'Running'), instance('c', 'Stopped')]
    expect(phaseCounts(all)).toEqual([
      ['Running', 1],
      ['Stopped', 2],
    ])
  })

  it('sums replicas over entries and nodes', () => {
    expect(totalReplicas([{ replicas: { vm: 2, other: 1 } }, { replicas: { vm: 1 } }])).toBe(4)
  })
})
