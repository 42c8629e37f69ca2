"""`python -m scripts.redis_acl USER`: the Redis ACL rule for a consumer that may touch only the
queue: its keys, its channels, and the commands the consumer runtime uses.

A consumer on a rented GPU machine then holds a Redis user that cannot read the bot's own keys
(under REDIS_BOT_PREFIX, which may not overlap the two prefixes it gets), run arbitrary
commands or see other data on the server. Apply the printed line with
`redis-cli` as an administrator; the password is read from $REDIS_ACL_PASSWORD (never printed
into logs by this tool beyond the line itself).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from shared.config import load_settings

# Commands the consumer runtime issues, including those its Lua steps call (ACL checks both).
# redis-py also tries CLIENT SETINFO (Redis 7.2+) and ignores a refusal. ROLE: a connection
# found through Sentinel checks it reached the master. The last line is for the topologies:
# SPUBLISH from the steps on a cluster, whose client also reads the slot map and the command
# table (COMMAND GETKEYS for XREADGROUP); WAIT and INFO (to choose between WAIT
# and WAITAOF) with REDIS_WAIT_REPLICAS. Redis 7.2+ with AOF also needs +waitaof (older
# servers refuse the name). On a cluster apply the rule on every node.
COMMANDS = (
    "ping hello client|setname echo role "
    "evalsha script|load "
    "xreadgroup xack xclaim xautoclaim xpending xinfo|groups xinfo|consumers xinfo|stream "
    "xgroup|create xgroup|createconsumer xgroup|delconsumer xadd xdel xrange xlen xread "
    "hset hget hmget hgetall hincrby hdel hexists exists expire del publish time "
    "subscribe unsubscribe spublish ssubscribe sunsubscribe cluster|slots command wait info "
    # Fairness (users' running sets and parked lists), provider leases, the read memo.
    "get set sadd srem sismember scard smembers rpush lpop llen ltrim blpop "
    "zadd zrem zincrby zcard zscore zrange zrevrange zremrangebyscore zscan pexpire pttl"
)


def consumer_rules(queue_prefix: str, result_prefix: str) -> list[str]:
    """ACL rules: keys and channels under the two prefixes, and only the commands above."""
    rules = ["resetkeys", f"~{queue_prefix}*", f"~{result_prefix}*"]
    rules += ["resetchannels", f"&{queue_prefix}*", "-@all"]
    rules += [f"+{command}" for command in COMMANDS.split()]
    return rules


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.redis_acl", description=__doc__)
    parser.add_argument("user", help="the Redis user name for consumers, e.g. consumer")
    args = parser.parse_args(argv)
    settings = load_settings()
    password = os.environ.get("REDIS_ACL_PASSWORD")
    if not password:
        sys.stderr.write("error: set REDIS_ACL_PASSWORD to the consumer user's password\n")
        return 2
    rules = consumer_rules(settings.redis_queue_prefix, settings.redis_result_prefix)
    sys.stdout.write(
        " ".join(["ACL", "SETUSER", args.user, "reset", "on", f">{password}", *rules])
    )
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
