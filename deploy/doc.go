// Package deploy holds no code: the directory carries allot's deployment
// files (compose/, k8s/, nomad/), and its tests render and check them the way
// the platforms will read them: kustomize overlays decoded strictly into the
// Kubernetes API types, Nomad job specs parsed as HCL and evaluated with their
// default variables, docker-compose.yaml cross-checked against itself, and every
// shipped allot configuration loaded with allot's own config loader.
package deploy
