import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { answerTokenPrompt, TOKEN_KEY, tokenPrompt } from '../src/api/auth'
import { ApiError, request } from '../src/api/client'

function json(status: number, body: unknown): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { 'Content-Type': 'application/json' },
  })
}

const fetchMock = vi.fn<typeof fetch>()

beforeEach(() => {
  localStorage.clear()
  fetchMock.mockReset()
  vi.stubGlobal('fetch', fetchMock)
})

afterEach(() => {
  vi.unstubAllGlobals()
})

function sentHeaders(call: number): Record<string, string> {
  return fetchMock.mock.calls[call][1]!.headers as Record<string, string>
}

describe('request', () => {
  it('returns the parsed JSON body', async () => {
    fetchMock.mockResolvedValueOnce(json(200, { version: '0.1.0' }))
    await expect(request('GET', '/v1/system/info')).resolves.toEqual({ version: '0.1.0' })
    expect(sentHeaders(0).Authorization).toBeUndefined()
  })

  it('turns the JSON error shape into an ApiError', async () => {
    fetchMock.mockResolvedValueOnce(
      json(422, { error: { code: 'invalid', message: 'bad edge', field: 'edges[0].to' } }),
    )
    const error = await request('POST', '/v1/workflows', {}).catch((e: unknown) => e)
    expect(error).toBeInstanceOf(ApiError)
    expect(error).toMatchObject({
      status: 422,
      code: 'invalid',
      message: 'bad edge',
      field: 'edges[0].to',
    })
  })

  it('keeps the list of problems of a validation error', async () => {
    const problems = [{ field: 'edges[0].to', message: "unknown node 'zz'" }]
    fetchMock.mockResolvedValueOnce(
      json(422, { error: { code: 'invalid', message: 'bad', field: 'edges[0].to', problems } }),
    )
    const error = await request('POST', '/v1/workflows', {}).catch((e: unknown) => e)
    expect(error).toMatchObject({ field: 'edges[0].to', problems })
  })

  it('has no problems when the server names none', async () => {
    fetchMock.mockResolvedValueOnce(json(400, { error: { code: 'invalid', message: 'bad' } }))
    const error = await request('POST', '/v1/tasks', {}).catch((e: unknown) => e)
    expect(error).toMatchObject({ field: null, problems: [] })
  })

  it('keeps a plain-text error readable', async () => {
    fetchMock.mockResolvedValueOnce(new Response('upstream down', { status: 502 }))
    const error = await request('GET', '/v1/nodes').catch((e: unknown) => e)
    expect(error).toMatchObject({ status: 502, code: 'http_502', message: 'upstream down' })
  })

  it('sends the stored token as a bearer token', async () => {
    localStorage.setItem(TOKEN_KEY, 's3cret')
    fetchMock.mockResolvedValueOnce(json(200, []))
    await request('GET', '/v1/nodes')
    expect(sentHeaders(0).Authorization).toBe('Bearer s3cret')
  })

  it('asks for a token once on 401, stores it and retries', async () => {
    const unauthorized = () => json(401, { error: { code: 'unauthorized', message: 'no' } })
    fetchMock
      .mockResolvedValueOnce(unauthorized())
      .mockResolvedValueOnce(unauthorized())
      .mockImplementation(async () => json(200, { ok: true }))

    const first = request('GET', '/v1/nodes')
    const second = request('GET', '/v1/system/info')
    await vi.waitFor(() => expect(tokenPrompt.visible).toBe(true))
    expect(fetchMock).toHaveBeenCalledTimes(2)
    answerTokenPrompt('  tok  ')

    await expect(first).resolves.toEqual({ ok: true })
    await expect(second).resolves.toEqual({ ok: true })
    expect(localStorage.getItem(TOKEN_KEY)).toBe('tok')
    expect(sentHeaders(2).Authorization).toBe('Bearer tok')
    expect(sentHeaders(3).Authorization).toBe('Bearer tok')
    expect(tokenPrompt.visible).toBe(false)
  })

  it('gives up with the 401 error when the prompt is cancelled', async () => {
    fetchMock.mockImplementation(async () =>
      json(401, { error: { code: 'unauthorized', message: 'no' } }),
    )
    const pending = request('GET', '/v1/nodes').catch((e: unknown) => e)
    await vi.waitFor(() => expect(tokenPrompt.visible).toBe(true))
    answerTokenPrompt(null)
    expect(await pending).toMatchObject({ status: 401, code: 'unauthorized' })
    expect(localStorage.getItem(TOKEN_KEY)).toBeNull()
  })
})
