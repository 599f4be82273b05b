// Package deploycheck holds tests only: they check the deployment files in
// deploy/ (compose, Kubernetes, systemd, NATS) against the gateway itself,
// without starting any server. Every YAML/JSON file parses; every gateway
// configuration loads with the gateway's strict loader (with the
// environment the deployment gives it); every port, probe path, flag and
// environment variable a deployment file names exists in the gateway's
// configuration, routes or command line. A failure names the file and key.
package deploycheck
