import { onScopeDispose } from 'vue'
import { subscribe, type Handler } from '../api/stream'

/** Subscribes to a stream event for the lifetime of the calling component. */
export function useSubscription(topic: string, handler: Handler): void {
  onScopeDispose(subscribe(topic, handler))
}
