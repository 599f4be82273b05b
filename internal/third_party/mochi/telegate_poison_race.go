//go:build race

package mqtt

// telegate: poisonPooledBodies makes race-detector builds (make test)
// overwrite a publish body before it goes back to the pool, so that a hook
// that kept a string or slice of it (ReuseIgnoredPublishBody's contract)
// reads 0xA5 bytes at once instead of, rarely, another client's data.
const poisonPooledBodies = true
