// Access token storage and the "please enter your token" prompt shared by REST and SSE.
import { reactive } from 'vue'

export const TOKEN_KEY = 'plum.token'

type Listener = (token: string | null) => void
const listeners = new Set<Listener>()

export function getToken(): string | null {
  return localStorage.getItem(TOKEN_KEY)
}

export function setToken(token: string | null): void {
  if (token) localStorage.setItem(TOKEN_KEY, token)
  else localStorage.removeItem(TOKEN_KEY)
  listeners.forEach((listener) => listener(token))
}

/** Calls `listener` whenever the token changes; returns the unsubscribe function. */
export function onTokenChange(listener: Listener): () => void {
  listeners.add(listener)
  return () => listeners.delete(listener)
}

/** State of the token dialog; `TokenDialog.vue` renders it. */
export const tokenPrompt = reactive({ visible: false, rejected: false })

let pending: { promise: Promise<string | null>; resolve: (token: string | null) => void } | null =
  null

/**
 * Asks the user for a token once, however many requests are waiting for it.
 * Resolves with the token, or null when the user cancels.
 */
export function requestToken(): Promise<string | null> {
  if (!pending) {
    let resolve!: (token: string | null) => void
    const promise = new Promise<string | null>((r) => (resolve = r))
    pending = { promise, resolve }
    tokenPrompt.rejected = getToken() !== null
    tokenPrompt.visible = true
  }
  return pending.promise
}

/** Closes the prompt; a non-empty token is stored and handed to the waiting requests. */
export function answerTokenPrompt(token: string | null): void {
  const value = token?.trim() || null
  if (value) setToken(value)
  tokenPrompt.visible = false
  const current = pending
  pending = null
  current?.resolve(value)
}
