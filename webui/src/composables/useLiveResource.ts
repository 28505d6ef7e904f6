// Data fetched over REST and kept fresh by stream events, for the lifetime of a component.
import { onScopeDispose, ref, shallowRef, type Ref } from 'vue'
import { RESYNC } from '../api/stream'
import { coalesce } from '../utils/coalesce'
import { useSubscription } from './useSubscription'

const REFETCH_DELAY_MS = 200

export interface LiveResource<T> {
  data: Ref<T | undefined>
  error: Ref<Error | null>
  loading: Ref<boolean>
  /** Fetches now. */
  reload: () => Promise<void>
  /** Replaces the data with a newer value received by other means (e.g. an event). */
  set: (value: T) => void
}

/** Fetches with `fetcher` now, and again (coalesced) after any `refetchOn` event or a resync. */
export function useLiveResource<T>(
  fetcher: () => Promise<T>,
  refetchOn: readonly string[],
): LiveResource<T> {
  const data = shallowRef<T>()
  const error = ref<Error | null>(null)
  const loading = ref(false)
  let generation = 0 // answers to older requests must not overwrite newer data

  async function reload(): Promise<void> {
    const mine = ++generation
    loading.value = true
    try {
      const value = await fetcher()
      if (mine === generation) {
        data.value = value
        error.value = null
      }
    } catch (e) {
      if (mine === generation) error.value = e instanceof Error ? e : new Error(String(e))
    } finally {
      if (mine === generation) loading.value = false
    }
  }

  function set(value: T): void {
    generation++
    loading.value = false
    data.value = value
    error.value = null
  }

  const refetch = coalesce(() => void reload(), REFETCH_DELAY_MS)
  for (const topic of [...refetchOn, RESYNC]) useSubscription(topic, refetch.call)
  onScopeDispose(refetch.cancel)

  void reload()
  return { data, error, loading, reload, set }
}
