// Typed shapes of the REST responses the dashboard reads (see API.md).

/** Error codes of the JSON error body `{"error": {"code", "message", "field"}}`. */
export type ErrorCode =
  | 'invalid'
  | 'not_found'
  | 'conflict'
  | 'invalid_state'
  | 'unauthorized'
  | 'forbidden'
  | 'too_large'
  | 'unavailable'
  | 'internal'

export interface ErrorBody {
  error: { code: ErrorCode; message: string; field?: string | null }
}

export type Role = 'controller' | 'agent' | 'all'

/** `GET /v1/system/info`, also the data of SSE `system` events. Times are Unix seconds. */
export interface SystemInfo {
  version: string
  role: Role
  startedAt: number
  now: number
  nodeCount: number
  healthyNodeCount: number
}

export type Health = 'Healthy' | 'Unhealthy'

export interface NodeUsage {
  cpuPercent: number
  memPercent: number
  memUsedBytes: number
  memTotalBytes: number
}

/** An item of `GET /v1/nodes`, also the data of SSE `nodes` events. */
export interface NodeInfo {
  nodeId: string
  ip: string
  labels: Record<string, string>
  lastSeen: number
  health: Health
  capacity: number
  usage: NodeUsage
  version?: string
}
