import { onScopeDispose, ref, type Ref } from 'vue'

/** The client's clock in Unix seconds, updated every `intervalMs` while the component lives. */
export function useNow(intervalMs = 1000): Ref<number> {
  const now = ref(Date.now() / 1000)
  const timer = setInterval(() => (now.value = Date.now() / 1000), intervalMs)
  onScopeDispose(() => clearInterval(timer))
  return now
}
