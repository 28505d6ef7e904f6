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

/** One of several validation problems (e.g. of a workflow graph). */
export interface Problem {
  field?: string | null
  message: string
}

export interface ErrorBody {
  error: { code: ErrorCode; message: string; field?: string | null; problems?: Problem[] }
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

export type TaskState =
  | 'Queued'
  | 'Pending'
  | 'Running'
  | 'Succeeded'
  | 'Failed'
  | 'Timeout'
  | 'Canceled'

export type Executor = 'embedded' | 'service' | 'os_process'

/** A task run: an item of `GET /v1/tasks`, also the data of SSE `tasks` events. */
export interface TaskRun {
  taskId: string
  name: string
  executor: Executor
  state: TaskState
  targetKind: string
  targetRef: string
  payload: unknown
  result: unknown
  error: string | null
  timeoutSec: number
  maxRetries: number
  attempt: number
  labels: Record<string, string>
  defId: string | null
  originTaskId: string | null
  workflowRunId: string | null
  dagNodeId: string | null
  scheduledOn: string
  createdAt: number
  startedAt: number | null
  finishedAt: number | null
}

export interface TaskAttempt {
  attempt: number
  state: TaskState
  error: string | null
  scheduledOn: string
  startedAt: number | null
  finishedAt: number | null
}

/** `GET /v1/tasks/{id}`. */
export interface TaskDetail extends TaskRun {
  attempts: TaskAttempt[]
}

export interface LogLine {
  stream: string
  text: string
  time: number
}

/** `GET /v1/tasks/{id}/logs`. */
export interface TaskLogs {
  taskId: string
  state: TaskState
  lines: LogLine[]
}

/** `POST /v1/tasks`. */
export interface NewTask {
  name: string
  executor: Executor
  payload?: unknown
  timeoutSec?: number
  maxRetries?: number
  autoStart?: boolean
}

/** An item of `GET /v1/workflows`. */
export interface Workflow {
  workflowId: string
  name: string
  version: number
  description: string
  nodes: unknown[]
  edges: unknown[]
  createdAt: number
  updatedAt: number
}

export type RunState = 'Pending' | 'Running' | 'Succeeded' | 'Failed' | 'Canceled'
export type NodeState = RunState | 'Timeout' | 'Skipped' | 'UpstreamFailed'

/** A workflow run: an item of `GET /v1/workflow-runs`, also SSE `runs` data. */
export interface WorkflowRun {
  runId: string
  workflowId: string
  workflowName: string
  version: number
  state: RunState
  trigger: string
  params: unknown
  result: unknown
  error: string | null
  createdAt: number
  startedAt: number | null
  finishedAt: number | null
}

export interface RunNode {
  nodeKey: string
  nodeId: string
  type: string
  state: NodeState
  taskId: string | null
  attempt: number
  input: unknown
  result: unknown
  error: string | null
  startedAt: number | null
  finishedAt: number | null
}

/** `GET /v1/workflow-runs/{id}`. */
export interface RunDetail extends WorkflowRun {
  nodes: RunNode[]
}

/** An item of `GET /v1/workers` (HTTP) or `GET /v1/embedded-workers` (gRPC); SSE `workers` data. */
export interface WorkerInfo {
  workerId: string
  transport: 'grpc' | 'http'
  nodeId: string
  instanceId: string
  appName: string
  appVersion: string
  url: string
  tasks: string[]
  labels: Record<string, string>
  capacity: number
  inflight: number
  health: Health | string
  lastSeen: number
}

/** An item of `GET /v1/services/list`. */
export interface ServiceSummary {
  serviceName: string
  endpoints: number
  healthy: number
  versions: string[]
  protocols: string[]
}

/** An item of `GET /v1/discovery`; SSE `services` data. */
export interface ServiceEndpoint {
  serviceName: string
  instanceId: string
  ip: string
  port: number
  protocol: string
  nodeId: string
  version: string
  labels: Record<string, string>
  healthy: boolean
  lastSeen: number
  registeredAt: number
}

/** An item of `GET /v1/schedules`; SSE `schedules` data. Times are Unix seconds. */
export interface Schedule {
  scheduleId: string
  workflowId: string
  cron: string
  timezone: string
  params: unknown
  enabled: boolean
  catchup: boolean
  nextRunAt: number | null
  lastRunAt: number | null
  lastRunId: string | null
  lastError: string | null
  createdAt: number
  updatedAt: number
}

/** `POST /v1/schedules`. */
export interface NewSchedule {
  workflowId: string
  cron: string
  timezone?: string
  params?: unknown
  enabled?: boolean
  catchup?: boolean
}

/** SSE `runs` data when one node of a run changed. */
export interface NodeEvent {
  runId: string
  workflowId: string
  node: RunNode
}

/** A `service=<name>:<protocol>:<port>` line of an app's meta.ini. */
export interface AppService {
  serviceName: string
  protocol: string
  port: number
  version: string
}

/** An item of `GET /v1/apps`, also the answer of `POST /v1/apps/upload`. */
export interface App {
  artifactId: string
  name: string
  version: string
  kind: 'zip' | 'image' | string
  url: string
  sha256: string
  sizeBytes: number
  services: AppService[]
  imageRepository: string
  imageTag: string
  createdAt: number
}

export type DeploymentState = 'Stopped' | 'Running'
export type InstancePhase = 'Pending' | 'Running' | 'Stopped' | 'Failed' | 'Completed'

export interface DeploymentEntry {
  artifactUrl?: string
  artifactId?: string
  appName?: string
  appVersion?: string
  startCmd?: string
  replicas: Record<string, number>
}

/** An item of `GET /v1/deployments`, also the data of SSE `deployments` events. */
export interface Deployment {
  deploymentId: string
  name: string
  state: DeploymentState
  entries: DeploymentEntry[]
  labels: Record<string, string>
  createdAt: number
  updatedAt: number
}

/** An instance of a deployment, also the data of SSE `instances` events. */
export interface Instance {
  instanceId: string
  deploymentId: string
  nodeId: string
  desired: DeploymentState
  phase: InstancePhase
  entry: number
  restarts: number
  exitCode: number | null
  pid: number | null
  healthy: boolean
  message: string
  lastReportAt: number | null
  replacedBy: string
  createdAt: number
}

/** `GET /v1/deployments/{id}`. */
export interface DeploymentDetail extends Deployment {
  instances: Instance[]
}

/** `POST /v1/deployments`. */
export interface NewDeployment {
  name: string
  labels?: Record<string, string>
  entries: { artifactId: string; startCmd?: string; replicas: Record<string, number> }[]
}

/** `GET /v1/instances/{id}/logs`. */
export interface InstanceLogs {
  instanceId: string
  nodeId: string
  text: string
  truncated: boolean
}
