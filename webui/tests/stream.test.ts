import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { setToken } from '../src/api/auth'
import { connect, disconnect, streamStatus, streamUrl, subscribe } from '../src/api/stream'

/** A stand-in for the browser's EventSource that tests drive by hand. */
class FakeEventSource {
  static CONNECTING = 0
  static OPEN = 1
  static CLOSED = 2
  static instances: FakeEventSource[] = []

  readyState = FakeEventSource.CONNECTING
  onopen: (() => void) | null = null
  onerror: (() => void) | null = null
  private listeners = new Map<string, ((e: MessageEvent) => void)[]>()

  constructor(readonly url: string) {
    FakeEventSource.instances.push(this)
  }
  addEventListener(type: string, fn: (e: MessageEvent) => void) {
    this.listeners.set(type, [...(this.listeners.get(type) ?? []), fn])
  }
  close() {
    this.readyState = FakeEventSource.CLOSED
  }
  open() {
    this.readyState = FakeEventSource.OPEN
    this.onopen?.()
  }
  fail(readyState: number) {
    this.readyState = readyState
    this.onerror?.()
  }
  emit(type: string, data: string, lastEventId = '') {
    this.listeners.get(type)?.forEach((fn) => fn(new MessageEvent(type, { data, lastEventId })))
  }
}

const latest = () => FakeEventSource.instances[FakeEventSource.instances.length - 1]
const fetchMock = vi.fn<typeof fetch>()

beforeEach(() => {
  FakeEventSource.instances = []
  localStorage.clear()
  vi.useFakeTimers()
  vi.stubGlobal('EventSource', FakeEventSource)
  fetchMock.mockReset()
  fetchMock.mockImplementation(async () => new Response('{}'))
  vi.stubGlobal('fetch', fetchMock)
})

afterEach(() => {
  disconnect()
  vi.useRealTimers()
  vi.unstubAllGlobals()
})

describe('streamUrl', () => {
  it('lists the topics and adds where to resume and the token when there are', () => {
    expect(streamUrl(['nodes', 'tasks'], null)).toBe('/v1/stream?topics=nodes,tasks')
    expect(streamUrl(['nodes', 'kv:app 1'], 'a/b', '42')).toBe(
      '/v1/stream?topics=nodes,kv%3Aapp%201&lastEventId=42&access_token=a%2Fb',
    )
  })
})

describe('subscribe', () => {
  it('shares one stream and hands parsed event data to the handlers of that topic', () => {
    const nodes = vi.fn()
    const other = vi.fn()
    subscribe('nodes', nodes)
    subscribe('nodes', other)
    expect(FakeEventSource.instances).toHaveLength(1)
    expect(latest().url).toBe('/v1/stream?topics=nodes')

    latest().emit('nodes', '{"nodeId":"edge-1"}')
    expect(nodes).toHaveBeenCalledWith({ nodeId: 'edge-1' })
    expect(other).toHaveBeenCalledWith({ nodeId: 'edge-1' })
    latest().emit('tasks', '{"taskId":"t1"}')
    expect(nodes).toHaveBeenCalledTimes(1)
  })

  it('stops calling a handler after unsubscribing', () => {
    const handler = vi.fn()
    const unsubscribe = subscribe('nodes', handler)
    unsubscribe()
    latest().emit('nodes', '{}')
    expect(handler).not.toHaveBeenCalled()
  })

  it('reopens the stream with a new topic added', () => {
    connect()
    const tasks = vi.fn()
    subscribe('tasks', tasks)
    expect(FakeEventSource.instances).toHaveLength(2)
    expect(FakeEventSource.instances[0].readyState).toBe(FakeEventSource.CLOSED)
    expect(latest().url).toBe('/v1/stream?topics=nodes,tasks')
    latest().emit('tasks', '{"taskId":"t1"}')
    expect(tasks).toHaveBeenCalledWith({ taskId: 't1' })
  })

  it('reopens with the access token once one is set', () => {
    connect()
    setToken('tok')
    expect(latest().url).toBe('/v1/stream?topics=nodes&access_token=tok')
  })
})

describe('connection status', () => {
  it('goes live on open and shows reconnecting while the browser retries', () => {
    connect()
    expect(streamStatus.value).toBe('connecting')
    latest().open()
    expect(streamStatus.value).toBe('live')
    latest().fail(FakeEventSource.CONNECTING)
    expect(streamStatus.value).toBe('reconnecting')
    latest().open()
    expect(streamStatus.value).toBe('live')
  })

  it('asks handlers to resync when a stream opens with nothing to resume from', () => {
    const resync = vi.fn()
    subscribe('resync', resync)
    latest().open()
    expect(resync).toHaveBeenCalledTimes(1)

    latest().fail(FakeEventSource.CLOSED)
    expect(streamStatus.value).toBe('reconnecting')
    vi.advanceTimersByTime(1000)
    expect(FakeEventSource.instances).toHaveLength(2)
    latest().open()
    expect(streamStatus.value).toBe('live')
    expect(resync).toHaveBeenCalledTimes(2)
  })

  it('reopens a closed stream after a backoff, resuming after the last event', () => {
    const resync = vi.fn()
    subscribe('resync', resync)
    subscribe('nodes', () => {})
    latest().open()
    latest().emit('nodes', '{}', '41')
    latest().emit('nodes', '{}', '42')
    resync.mockClear()

    latest().fail(FakeEventSource.CLOSED)
    vi.advanceTimersByTime(999)
    expect(FakeEventSource.instances).toHaveLength(1)
    vi.advanceTimersByTime(1)
    expect(latest().url).toBe('/v1/stream?topics=nodes&lastEventId=42')
    latest().open()
    expect(resync).not.toHaveBeenCalled() // the server replays what was missed

  })

  it('waits longer after each failed attempt, up to a cap', () => {
    connect()
    const delays: number[] = []
    for (let attempt = 0; attempt < 6; attempt++) {
      const count = FakeEventSource.instances.length
      latest().fail(FakeEventSource.CLOSED)
      let waited = 0
      while (FakeEventSource.instances.length === count) {
        vi.advanceTimersByTime(100)
        waited += 100
      }
      delays.push(waited)
    }
    expect(delays).toEqual([1000, 2000, 4000, 8000, 15000, 15000])
  })

  it('checks over REST whether a refused stream wants a token, once per outage', () => {
    connect()
    latest().fail(FakeEventSource.CONNECTING)
    expect(fetchMock).not.toHaveBeenCalled()
    latest().fail(FakeEventSource.CLOSED)
    expect(fetchMock).toHaveBeenCalledTimes(1)
    expect(fetchMock.mock.calls[0][0]).toBe('/v1/system/info')

    vi.advanceTimersByTime(1000)
    latest().fail(FakeEventSource.CLOSED)
    expect(fetchMock).toHaveBeenCalledTimes(1)

    vi.advanceTimersByTime(2000)
    latest().open()
    latest().fail(FakeEventSource.CLOSED)
    expect(fetchMock).toHaveBeenCalledTimes(2)
  })

  it('passes server resync events on', () => {
    const resync = vi.fn()
    subscribe('resync', resync)
    latest().emit('resync', '{}')
    expect(resync).toHaveBeenCalledTimes(1)
  })
})
