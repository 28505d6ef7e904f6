import { ref, type Ref } from 'vue'
import { ElMessage } from 'element-plus'

/**
 * Wraps a one-click API action (cancel, rerun, retry…): `busy` while it runs, a success toast
 * with `done()`'s text, and the server's message as an error toast when it fails.
 */
export function useAction(): {
  busy: Ref<boolean>
  perform: (action: () => Promise<unknown>, done: () => string) => Promise<void>
} {
  const busy = ref(false)
  async function perform(action: () => Promise<unknown>, done: () => string): Promise<void> {
    busy.value = true
    try {
      await action()
      ElMessage.success(done())
    } catch (e) {
      ElMessage.error(e instanceof Error ? e.message : String(e))
    } finally {
      busy.value = false
    }
  }
  return { busy, perform }
}
