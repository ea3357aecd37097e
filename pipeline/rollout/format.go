package rollout

import (
	"strconv"
	"time"
)

// Duration prints a time in a stage the way people say it: "45m", "19h", "1d 4h",
// "2 days".
func Duration(d time.Duration) string {
	d = d.Round(time.Minute)
	days, hours, mins := int(d/(24*time.Hour)), int(d%(24*time.Hour)/time.Hour), int(d%time.Hour/time.Minute)
	switch {
	case days > 0 && hours == 0:
		if days == 1 {
			return "1 day"
		}
		return strconv.Itoa(days) + " days"
	case days > 0:
		return strconv.Itoa(days) + "d " + strconv.Itoa(hours) + "h"
	case hours > 0 && mins == 0:
		return strconv.Itoa(hours) + "h"
	case hours > 0:
		return strconv.Itoa(hours) + "h " + strconv.Itoa(mins) + "m"
	}
	return strconv.Itoa(mins) + "m"
}

func itoa[T int | int64](n T) string { return strconv.FormatInt(int64(n), 10) }
