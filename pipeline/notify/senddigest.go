package notify

import (
	"context"
	"fmt"
	"time"

	"github.com/flagwatch/flagwatch/pipeline/chart"
	"github.com/flagwatch/flagwatch/pipeline/digest"
	"github.com/flagwatch/flagwatch/pipeline/nflog"
	"github.com/flagwatch/flagwatch/pipeline/render"
	"github.com/flagwatch/flagwatch/pipeline/slack"
)

// builtDigest is one rendered digest.
type builtDigest struct {
	flags []digest.Flag
	msgs  []slack.Message
	chart []byte // PNG, nil when there is nothing to draw
}

func buildDigest(ctx context.Context, src digest.Source, at time.Time, o render.Options) (builtDigest, error) {
	now, err := src.Results(ctx, at)
	if err != nil {
		return builtDigest{}, fmt.Errorf("digest results: %w", err)
	}
	prev, err := src.Results(ctx, at.Add(-7*24*time.Hour))
	if err != nil {
		return builtDigest{}, fmt.Errorf("digest results a week ago: %w", err)
	}
	fs := digest.Summarise(now, prev)
	d := builtDigest{flags: fs, msgs: render.Digest(fs, at, o)}
	if d.chart, err = chart.Draw(fs); err != nil {
		return builtDigest{}, fmt.Errorf("draw digest chart: %w", err)
	}
	return d, nil
}

// sendDigest posts the digest for the schedule slot at once across replicas and
// restarts: its op is the slot, claimed and logged like an alert's.
func (p *processor) sendDigest(ctx context.Context, src digest.Source, at time.Time, op string) error {
	l := p.logger.With("channel", p.o.DefaultChannel, "op", op)
	var done bool
	if err := p.retryStore(ctx, "look up "+op, func(ctx context.Context) (err error) {
		done, err = p.log.Has(ctx, op)
		return err
	}); err != nil {
		return err
	}
	if done {
		p.m.digests.WithLabelValues("skipped").Inc()
		l.Info("digest already sent")
		return nil
	}
	holder := p.o.ReplicaID + "/" + randomID(4)
	c, err := p.acquire(ctx, op, holder, p.o.ClaimLease)
	if err != nil {
		return err
	}
	if !c.Held {
		p.m.digests.WithLabelValues("skipped").Inc()
		l.Info("another notifier is sending the digest", "holder", c.Holder)
		return nil
	}
	if done, err = p.log.Has(ctx, op); err != nil || done {
		return err
	}
	d, err := buildDigest(ctx, src, at, p.renderOptions())
	if err != nil {
		p.m.digests.WithLabelValues("failed").Inc()
		return err
	}
	e := nflog.Entry{Op: op, Kind: nflog.KindDigest, Replica: holder, Status: nflog.StatusPosted, Message: d.msgs[0].MarshalBody()}
	var channel, ts string
	for i, m := range d.msgs {
		m.Channel = p.o.DefaultChannel
		if i > 0 {
			m.ThreadTS = ts
			if channel != "" {
				m.Channel = channel
			}
		}
		ch, mts, err := p.post(ctx, op, holder, m)
		if err != nil {
			p.m.digests.WithLabelValues("failed").Inc()
			if i == 0 {
				return fmt.Errorf("post digest: %w", err)
			}
			l.Error("could not post the rest of the digest", "part", i+1, "err", err)
			break
		}
		p.m.sent.WithLabelValues(nflog.KindDigest).Inc()
		if i == 0 {
			channel, ts = ch, mts
		}
	}
	e.Channel, e.TS, e.At = channel, ts, p.now()
	if d.chart != nil && p.uploader != nil && channel != "" {
		f := slack.File{Channel: channel, ThreadTS: ts, Name: "flagwatch-lift-" + at.Format("2006-01-02") + ".png",
			Title: "Lift with always-valid intervals, week of " + at.Format("2 Jan 2006"), Data: d.chart}
		if err := p.call(ctx, op, holder, channel, func(ctx context.Context) error { return p.uploader.Upload(ctx, f) }); err != nil {
			l.Error("could not upload the digest chart", "err", err)
			e.Error = "chart: " + err.Error()
		}
	}
	p.m.digests.WithLabelValues("sent").Inc()
	l.Info("digest sent", "ts", ts, "messages", len(d.msgs), "flags", len(d.flags))
	return p.record(ctx, e)
}
