package customers

import "context"

// ErasedTombstone reports whether customer id was erased, read from the
// bucket's tombstone erased.{Pseudonym(id)} (so erasures by other replicas
// count). The tombstone stores no customer id: it says "this id was
// erased" only to whoever already knows the id. The HTTP API answers
// 410 Gone from it.
func (r *Registry) ErasedTombstone(ctx context.Context, id string) bool {
	var v map[string]any
	_, err := r.kv.Get(ctx, "erased."+r.Pseudonym(id), &v)
	return err == nil || r.Erased(id)
}
