// One shared EventSource on /v1/stream for the whole dashboard.
//
// Pages call subscribe(topic, handler). The stream carries the base topics plus every topic
// someone subscribed to; subscribing to a new topic reopens it with the larger set. A reopened
// stream resumes after the last event received (the browser's own retries do the same), and
// the server replays what was missed. `resync` is not a topic but an event: the server sends it
// when it cannot replay, and it is fired locally when a stream opens with nothing to resume
// from, so that no change made between a page's first fetch and the stream's start is lost.
import { readonly, ref } from 'vue'
import { getToken, onTokenChange } from './auth'
import { api } from './client'

export type StreamStatus = 'connecting' | 'live' | 'reconnecting'
export type Handler = (data: unknown) => void

export const RESYNC = 'resync'
const BASE_TOPICS = ['nodes']
const RETRY_MIN_MS = 1000
const RETRY_MAX_MS = 15000

const status = ref<StreamStatus>('connecting')
/** Connection state for the header indicator. */
export const streamStatus = readonly(status)

const handlers = new Map<string, Set<Handler>>()
let topics: string[] = [...BASE_TOPICS]
let source: EventSource | null = null
let lastEventId = ''
let retryMs = RETRY_MIN_MS
let retryTimer: ReturnType<typeof setTimeout> | undefined

/** The stream URL for a topic set, resuming after `after` and with the token when given. */
export function streamUrl(topicList: readonly string[], token: string | null, after = ''): string {
  let url = `/v1/stream?topics=${topicList.map(encodeURIComponent).join(',')}`
  if (after) url += `&lastEventId=${encodeURIComponent(after)}`
  if (token) url += `&access_token=${encodeURIComponent(token)}`
  return url
}

function dispatch(event: string, data: unknown): void {
  handlers.get(event)?.forEach((handler) => handler(data))
}

function parse(raw: string): unknown {
  try {
    return JSON.parse(raw)
  } catch {
    return raw
  }
}

function listen(es: EventSource, event: string): void {
  es.addEventListener(event, (message) => {
    const { data, lastEventId: id } = message as MessageEvent
    if (id) lastEventId = id
    dispatch(event, parse(data))
  })
}

let authChecked = false // since the stream was last open

/**
 * EventSource hides why a stream was refused. A REST call tells, and if the answer is 401 it
 * asks the user for a token, after which the stream reopens with it (see onTokenChange below).
 * Once per outage, so that a user who closed the prompt is not asked again at every retry.
 */
function checkAuth(): void {
  if (authChecked) return
  authChecked = true
  api.systemInfo().catch(() => undefined)
}

function scheduleReopen(): void {
  status.value = 'reconnecting'
  clearTimeout(retryTimer)
  retryTimer = setTimeout(open, retryMs)
  retryMs = Math.min(retryMs * 2, RETRY_MAX_MS)
}

function open(): void {
  clearTimeout(retryTimer)
  source?.close()
  const es = new EventSource(streamUrl(topics, getToken(), lastEventId))
  source = es
  if (status.value === 'live') status.value = 'reconnecting'
  es.onopen = () => {
    status.value = 'live'
    retryMs = RETRY_MIN_MS
    authChecked = false
    if (!lastEventId) dispatch(RESYNC, null)
  }
  es.onerror = () => {
    if (source !== es) return
    // CONNECTING: the browser retries by itself (sending Last-Event-ID). CLOSED: it gave up
    // (e.g. 401 or a server restart mid-handshake), so a new stream is opened after a backoff.
    if (es.readyState === EventSource.CLOSED) {
      scheduleReopen()
      checkAuth()
    } else {
      status.value = 'reconnecting'
    }
  }
  for (const topic of topics) listen(es, topic)
  listen(es, RESYNC)
}

/** Opens the stream if it is not open yet (the app shell calls this once). */
export function connect(): void {
  if (!source) open()
}

/** Calls `handler` with the parsed data of each `topic` event; returns the unsubscribe function. */
export function subscribe(topic: string, handler: Handler): () => void {
  let set = handlers.get(topic)
  if (!set) handlers.set(topic, (set = new Set()))
  set.add(handler)
  if (topic !== RESYNC && !topics.includes(topic)) {
    topics = [...topics, topic]
    if (source) open()
  }
  connect()
  return () => {
    set.delete(handler)
  }
}

/** Closes the stream and forgets all handlers (for tests). */
export function disconnect(): void {
  clearTimeout(retryTimer)
  source?.close()
  source = null
  lastEventId = ''
  authChecked = false
  retryMs = RETRY_MIN_MS
  topics = [...BASE_TOPICS]
  handlers.clear()
  status.value = 'connecting'
}

onTokenChange(() => {
  if (source) open()
})
