/**
 * Returns a function that runs `fn` once, `ms` after the first of a burst of calls.
 * Unlike a debounce, a steady stream of calls cannot postpone `fn` forever.
 */
export function coalesce(fn: () => void, ms: number): { call: () => void; cancel: () => void } {
  let timer: ReturnType<typeof setTimeout> | undefined
  return {
    call: () => {
      if (timer === undefined) {
        timer = setTimeout(() => {
          timer = undefined
          fn()
        }, ms)
      }
    },
    cancel: () => {
      clearTimeout(timer)
      timer = undefined
    },
  }
}
