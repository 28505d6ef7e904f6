import { describe, expect, it } from 'vitest'
import { formatDuration, shortId } from '../src/utils/format'
import { applyRunEvent, isNodeEvent, parseJson, upsert } from '../src/utils/live'

describe('upsert', () => {
  const list = [
    { id: 'b', v: 1 },
    { id: 'a', v: 1 },
  ]

  it('replaces a known item in place', () => {
    expect(upsert(list, { id: 'a', v: 2 }, 'id')).toEqual([
      { id: 'b', v: 1 },
      { id: 'a', v: 2 },
    ])
  })

  it('puts a new item on top', () => {
    expect(upsert(list, { id: 'c', v: 1 }, 'id').map((x) => x.id)).toEqual(['c', 'b', 'a'])
  })

  it('removes an item that should not be kept, and never adds it', () => {
    expect(upsert(list, { id: 'b', v: 2 }, 'id', false).map((x) => x.id)).toEqual(['a'])
    expect(upsert(list, { id: 'c', v: 2 }, 'id', false)).toEqual(list)
  })

  it('does not mutate its input', () => {
    upsert(list, { id: 'a', v: 9 }, 'id')
    expect(list[1]).toEqual({ id: 'a', v: 1 })
  })
})

describe('parseJson', () => {
  it('parses JSON and treats blank text as nothing', () => {
    expect(parseJson('{"a": [1]}')).toEqual({ ok: true, value: { a: [1] } })
    expect(parseJson('  \n')).toEqual({ ok: true, value: undefined })
  })

  it('reports invalid JSON', () => {
    const result = parseJson('{a: 1}')
    expect(result.ok).toBe(false)
    if (!result.ok) expect(result.message.length).toBeGreaterThan(0)
  })
})

describe('applyRunEvent', () => {
  const node = (nodeKey: string, state: string) => ({ nodeKey, state })
  const run = { runId: 'r1', state: 'Running', nodes: [node('a', 'Running'), node('b', 'Pending')] }

  it('replaces a node in place, or appends a new one', () => {
    const next = applyRunEvent(run, { runId: 'r1', workflowId: 'w', node: node('a', 'Succeeded') })
    expect(next.nodes).toEqual([node('a', 'Succeeded'), node('b', 'Pending')])
    const more = applyRunEvent(run, { runId: 'r1', workflowId: 'w', node: node('c', 'Running') })
    expect(more.nodes.map((n) => n.nodeKey)).toEqual(['a', 'b', 'c'])
  })

  it('updates the run fields and keeps its nodes', () => {
    const next = applyRunEvent(run, { runId: 'r1', state: 'Succeeded' })
    expect(next.state).toBe('Succeeded')
    expect(next.nodes).toBe(run.nodes)
  })

  it('ignores other runs', () => {
    expect(applyRunEvent(run, { runId: 'r2', state: 'Failed' })).toBe(run)
    expect(applyRunEvent(run, { runId: 'r2', node: node('a', 'Failed') })).toBe(run)
  })

  it('tells node events from run events', () => {
    expect(isNodeEvent({ runId: 'r1', node: node('a', 'Running') })).toBe(true)
    expect(isNodeEvent({ runId: 'r1', state: 'Running' })).toBe(false)
    expect(isNodeEvent(null)).toBe(false)
  })
})

describe('formatDuration', () => {
  it('is empty before the start', () => {
    expect(formatDuration(null, null, 100)).toBe('')
  })

  it('picks a unit by size', () => {
    expect(formatDuration(100, 100.25, 0)).toBe('250ms')
    expect(formatDuration(100, 112.34, 0)).toBe('12.3s')
    expect(formatDuration(100, 345, 0)).toBe('4m 05s')
    expect(formatDuration(0, 7380, 0)).toBe('2h 03m')
  })

  it('counts to now while running', () => {
    expect(formatDuration(100, null, 103)).toBe('3s')
  })
})

describe('shortId', () => {
  it('keeps eight characters', () => {
    expect(shortId('37f76ad162b320e163cca11d8143fc8f')).toBe('37f76ad1')
  })
})
