// Pure helpers that fold stream events into lists fetched over REST.

/**
 * Returns `list` with `item` replacing the element of the same key, in place; an unknown item
 * goes to the top (lists are newest first). `keep: false` removes it instead (e.g. it no longer
 * matches a filter). The input is never mutated.
 */
export function upsert<T, K extends keyof T>(list: readonly T[], item: T, key: K, keep = true): T[] {
  const index = list.findIndex((x) => x[key] === item[key])
  if (index < 0) return keep ? [item, ...list] : [...list]
  if (!keep) return list.filter((_, i) => i !== index)
  const copy = [...list]
  copy[index] = item
  return copy
}

/** Returns `list` with the element of the same key replaced by `item`, else `item` appended. */
export function replaceOrAppend<T, K extends keyof T>(list: readonly T[], item: T, key: K): T[] {
  const index = list.findIndex((x) => x[key] === item[key])
  if (index < 0) return [...list, item]
  const copy = [...list]
  copy[index] = item
  return copy
}

export type JsonResult = { ok: true; value: unknown } | { ok: false; message: string }

/** Parses JSON text; blank text is `undefined` (nothing given). */
export function parseJson(text: string): JsonResult {
  if (!text.trim()) return { ok: true, value: undefined }
  try {
    return { ok: true, value: JSON.parse(text) }
  } catch (e) {
    return { ok: false, message: e instanceof Error ? e.message : String(e) }
  }
}

/** True for SSE `runs` data that reports one node's change rather than the run itself. */
export function isNodeEvent(data: unknown): data is { runId: string; node: { nodeKey: string } } {
  const node = (data as { node?: unknown } | null)?.node
  return typeof node === 'object' && node !== null
}

/**
 * Folds SSE `runs` data into a run with its nodes: a node event replaces (or adds) that node,
 * a run event updates the run's own fields. Data about another run returns `run` unchanged.
 */
export function applyRunEvent<N extends { nodeKey: string }, R extends { runId: string; nodes: N[] }>(
  run: R,
  data: unknown,
): R {
  const event = data as { runId?: string; node?: N } | null
  if (!event || event.runId !== run.runId) return run
  if (isNodeEvent(data)) return { ...run, nodes: replaceOrAppend(run.nodes, event.node as N, 'nodeKey') }
  return { ...run, ...(data as object), nodes: run.nodes }
}
