// Drives the real posthog-node SDK against a flagwatch capture in proxy mode (see
// ../proxy_test.go): flags are evaluated remotely, by PostHog (a stand-in) through the
// proxy, and events are sent through it too. Prints what the SDK got from PostHog.
import { PostHog } from 'posthog-node'

const { CAPTURE_HOST, API_KEY, USERS } = process.env
const posthog = new PostHog(API_KEY, {
  host: CAPTURE_HOST,
  flushAt: 4,
  flushInterval: 0,
  fetchRetryDelay: 50, // PostHog's 503 is retried soon, not in 3 s
  featureFlagsPollingInterval: 60000,
})
const errors = []
posthog.on('error', (err) => errors.push(String(err)))

const flags = {}
const payloads = {}
for (const user of USERS.split(',')) {
  // Remote evaluation: POST /flags/?v=2; sends the $feature_flag_called exposure.
  flags[user] = await posthog.getFeatureFlag('new-checkout', user)
  // The API that replaces it: one /flags request for all flags of the user.
  const evaluated = await posthog.evaluateFlags(user)
  payloads[user] = evaluated.getFlagPayload('new-checkout')
  posthog.capture({ distinctId: user, event: 'purchase', properties: { revenue: 10 } })
}
await posthog.shutdown()
console.log(JSON.stringify({ flags, payloads, errors }))
