// REST client: JSON in and out, bearer token, API errors as ApiError.
import { getToken, requestToken } from './auth'
import type {
  App,
  Deployment,
  DeploymentDetail,
  InstanceLogs,
  NewDeployment,
  ErrorBody,
  ErrorCode,
  NewTask,
  NewSchedule,
  NodeInfo,
  Problem,
  RunDetail,
  Schedule,
  ServiceEndpoint,
  ServiceSummary,
  SystemInfo,
  TaskDetail,
  TaskLogs,
  TaskRun,
  Workflow,
  WorkerInfo,
  WorkflowRun,
} from './types'

export class ApiError extends Error {
  readonly status: number
  readonly code: ErrorCode | string
  readonly field: string | null
  readonly problems: Problem[]

  constructor(
    status: number,
    code: ErrorCode | string,
    message: string,
    field: string | null,
    problems: Problem[] = [],
  ) {
    super(message)
    this.name = 'ApiError'
    this.status = status
    this.code = code
    this.field = field
    this.problems = problems
  }
}

function isErrorBody(value: unknown): value is ErrorBody {
  const error = (value as ErrorBody | null)?.error
  return typeof error === 'object' && error !== null && typeof error.code === 'string'
}

/** Turns a failed response into an ApiError, whether or not its body has the JSON error shape. */
export async function toApiError(response: Response): Promise<ApiError> {
  const text = await response.text()
  let body: unknown = null
  try {
    body = JSON.parse(text)
  } catch {
    // not JSON: fall back to the status text below
  }
  if (isErrorBody(body)) {
    const { code, message, field, problems } = body.error
    return new ApiError(
      response.status,
      code,
      message,
      field ?? null,
      Array.isArray(problems) ? problems : [],
    )
  }
  const message = text.trim() || response.statusText || `HTTP ${response.status}`
  return new ApiError(response.status, `http_${response.status}`, message, null)
}

function send(method: string, path: string, body: unknown): Promise<Response> {
  const headers: Record<string, string> = { Accept: 'application/json' }
  const token = getToken()
  if (token) headers.Authorization = `Bearer ${token}`
  // FormData (uploads) goes as multipart, with the boundary the browser chooses.
  const form = body instanceof FormData
  if (body !== undefined && !form) headers['Content-Type'] = 'application/json'
  return fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : form ? body : JSON.stringify(body),
  })
}

/** Sends a request; on 401 asks for a token and tries again until it works or the user cancels. */
export async function request<T>(method: string, path: string, body?: unknown): Promise<T> {
  let response = await send(method, path, body)
  while (response.status === 401 && (await requestToken()) !== null) {
    response = await send(method, path, body)
  }
  if (!response.ok) throw await toApiError(response)
  if (response.status === 204) return undefined as T
  return (await response.json()) as T
}

export const api = {
  systemInfo: () => request<SystemInfo>('GET', '/v1/system/info'),
  nodes: () => request<NodeInfo[]>('GET', '/v1/nodes'),

  tasks: (state?: string, limit = 200) =>
    request<TaskRun[]>('GET', `/v1/tasks?${query({ state, limit })}`),
  task: (id: string) => request<TaskDetail>('GET', `/v1/tasks/${id}`),
  taskLogs: (id: string) => request<TaskLogs>('GET', `/v1/tasks/${id}/logs`),
  createTask: (task: NewTask) => request<TaskRun>('POST', '/v1/tasks', task),
  taskAction: (id: string, action: 'cancel' | 'rerun') =>
    request<unknown>('POST', `/v1/tasks/${id}?action=${action}`),

  workflows: () => request<Workflow[]>('GET', '/v1/workflows'),
  createWorkflow: (definition: unknown) => request<Workflow>('POST', '/v1/workflows', definition),
  runWorkflow: (id: string, params?: unknown) =>
    request<WorkflowRun>(
      'POST',
      `/v1/workflows/${id}?action=run`,
      params === undefined ? {} : { params },
    ),

  runs: (limit = 200) => request<WorkflowRun[]>('GET', `/v1/workflow-runs?${query({ limit })}`),
  run: (id: string) => request<RunDetail>('GET', `/v1/workflow-runs/${id}`),
  runAction: (id: string, action: 'cancel' | 'retry') =>
    request<unknown>('POST', `/v1/workflow-runs/${id}?action=${action}`),

  workers: () => request<WorkerInfo[]>('GET', '/v1/workers'),
  embeddedWorkers: () => request<WorkerInfo[]>('GET', '/v1/embedded-workers'),
  deleteWorker: (worker: Pick<WorkerInfo, 'workerId' | 'transport'>) =>
    request<void>(
      'DELETE',
      `/v1/${worker.transport === 'grpc' ? 'embedded-workers' : 'workers'}/${encodeURIComponent(worker.workerId)}`,
    ),

  services: () => request<ServiceSummary[]>('GET', '/v1/services/list'),
  discovery: (service: string) =>
    request<ServiceEndpoint[]>('GET', `/v1/discovery?${query({ service, all: 'true' })}`),

  schedules: () => request<Schedule[]>('GET', '/v1/schedules'),
  createSchedule: (schedule: NewSchedule) => request<Schedule>('POST', '/v1/schedules', schedule),
  updateSchedule: (id: string, patch: Partial<NewSchedule>) =>
    request<Schedule>('PATCH', `/v1/schedules/${encodeURIComponent(id)}`, patch),
  deleteSchedule: (id: string) => request<void>('DELETE', `/v1/schedules/${encodeURIComponent(id)}`),

  apps: () => request<App[]>('GET', '/v1/apps'),
  uploadApp: (file: File) => {
    const form = new FormData()
    form.append('file', file)
    return request<App>('POST', '/v1/apps/upload', form)
  },
  deleteApp: (id: string) => request<void>('DELETE', `/v1/apps/${id}`),

  deployments: () => request<Deployment[]>('GET', '/v1/deployments'),
  deployment: (id: string) => request<DeploymentDetail>('GET', `/v1/deployments/${id}`),
  createDeployment: (deployment: NewDeployment) =>
    request<DeploymentDetail>('POST', '/v1/deployments', deployment),
  deploymentAction: (id: string, action: 'start' | 'stop') =>
    request<unknown>('POST', `/v1/deployments/${id}?action=${action}`),
  deleteDeployment: (id: string) => request<void>('DELETE', `/v1/deployments/${id}`),
  instanceLogs: (id: string) => request<InstanceLogs>('GET', `/v1/instances/${id}/logs`),
}

/** `a=1&b=x`, leaving out empty values. */
function query(params: Record<string, string | number | undefined>): string {
  const entries = Object.entries(params).filter(([, v]) => v !== undefined && v !== '')
  return new URLSearchParams(entries.map(([k, v]) => [k, String(v)])).toString()
}
