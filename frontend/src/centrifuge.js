// The demo pages import the official SDK from /static/vendor/centrifuge.js, built from here
// by `npm run build` (esbuild): one ES module, minified, with its licence notes beside it.
export { Centrifuge, State, Subscription, SubscriptionState, UnauthorizedError } from "centrifuge";
