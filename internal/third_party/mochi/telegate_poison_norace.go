//go:build !race

package mqtt

// telegate: see telegate_poison_race.go.
const poisonPooledBodies = false
