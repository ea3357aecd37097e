// Drives the real posthog-node SDK against a flagwatch capture (see ../sdk_test.go).
// Flags are evaluated locally from the definitions the test server serves, so no
// PostHog is involved; the script prints the variants the SDK assigned as JSON.
import { PostHog } from 'posthog-node'

const { CAPTURE_HOST, API_KEY, PERSONAL_API_KEY } = process.env
const posthog = new PostHog(API_KEY, {
  host: CAPTURE_HOST,
  personalApiKey: PERSONAL_API_KEY,
  flushAt: 3,
  featureFlagsPollingInterval: 60000,
})
posthog.on('error', (err) => {
  console.error('posthog error:', err)
  process.exitCode = 1
})

if (!(await posthog.waitForLocalEvaluationReady(10000))) {
  throw new Error('flag definitions did not load')
}

const assigned = {}
for (const user of ['user-1', 'user-2', 'user-3', 'user-4']) {
  // Sends a $feature_flag_called exposure, as an app branching on the flag does.
  assigned[user] = await posthog.getFeatureFlag('new-checkout', user, { onlyEvaluateLocally: true })
  posthog.capture({
    distinctId: user,
    event: 'purchase',
    properties: { revenue: 10, '$feature/new-checkout': assigned[user] },
  })
}
// A raw exposure of a boolean flag, as an app that evaluates flags elsewhere sends it.
posthog.capture({
  distinctId: 'user-5',
  event: '$feature_flag_called',
  properties: { $feature_flag: 'kill-switch', $feature_flag_response: false },
})

await posthog.flush()
await posthog.shutdown()
console.log(JSON.stringify({ assigned }))
