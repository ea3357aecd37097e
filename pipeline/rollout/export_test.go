package rollout

import (
	"context"
	"errors"

	"github.com/flagwatch/flagwatch/pipeline/analyze"
)

// DieMidChange runs c on pass as a replica that dies right after the flag system took
// its change: the claim and the intent are recorded, the outcome is not.
func DieMidChange(ctx context.Context, c *Controller, pass *analyze.Pass) error {
	c.dieAfterCall = true
	defer func() { c.dieAfterCall = false }()
	return died(c.ObservePass(ctx, pass))
}

// DieBeforeCall runs c on pass as a replica that dies between recording the intent of
// its change and calling the flag system.
func DieBeforeCall(ctx context.Context, c *Controller, pass *analyze.Pass) error {
	c.dieAtIntent = true
	defer func() { c.dieAtIntent = false }()
	return died(c.ObservePass(ctx, pass))
}

func died(err error) error {
	if errors.Is(err, errDied) {
		return nil
	}
	if err == nil {
		return errors.New("the pass made no change to die in")
	}
	return err
}
