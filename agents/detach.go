package agents

import (
	"context"
	"fmt"
)

// DetachKnowledgeBase removes a knowledge base from every agent of the tenant that names
// it, so deleting a KB leaves no dangling ID behind (which would fail the agent's next
// validation). The agents' views are marked stale and re-rendered at their next read.
func (s *Service) DetachKnowledgeBase(ctx context.Context, tenantID, kbID string) (int64, error) {
	tag, err := s.pool.Exec(ctx, `UPDATE agents
		SET spec = jsonb_set(spec, '{knowledge_base_ids}', (spec->'knowledge_base_ids') - $2::text),
		    view_version = 0, updated_at = now()
		WHERE tenant_id = $1 AND spec->'knowledge_base_ids' ? $2::text`, tenantID, kbID)
	if err != nil {
		return 0, fmt.Errorf("agents: detach knowledge base %s: %w", kbID, err)
	}
	return tag.RowsAffected(), nil
}
