// Package examples holds no code: its test builds and tests the consumer
// modules below it (each a module of its own, as an integrator's service
// is, with a replace directive to this repository) and checks what a
// production build of them links.
package examples
