"""`auditlock lifecycle`: the bucket lifecycle and Object Lock configuration derived from the config, as JSON."""

from __future__ import annotations

import argparse
import json
import sys

from auditlock.bucket.lifecycle import bucket_configuration, cloudformation_rules
from auditlock.config import load_config
from auditlock.errors import AuditlockError
from auditlock.textsafe import error_text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of lifecycle."""
    parser.add_argument("--config", help="config file (default: $AUDITLOCK_CONFIG, else ./auditlock.toml)")
    parser.add_argument("--format", choices=("boto3", "cloudformation"), default="boto3",
                        help="boto3: {\"prefix_id\", \"lifecycle\", \"object_lock\"}, the last two as "
                             "put_bucket_lifecycle_configuration and put_object_lock_configuration take them "
                             "(default); cloudformation: {\"PrefixId\", \"Rules\"}, the template's PrefixId "
                             "parameter and its AWS::S3::Bucket LifecycleConfiguration.Rules")


def run(args: argparse.Namespace) -> int:
    """Print the configuration; exit 1 when the config is invalid."""
    try:
        config = load_config(args.config)
    except AuditlockError as exc:
        print(f"auditlock lifecycle: {error_text(exc)}", file=sys.stderr)
        return 1
    document = bucket_configuration(config)
    if args.format == "cloudformation":
        document = {"PrefixId": document["prefix_id"], "Rules": cloudformation_rules(document["lifecycle"])}
    print(json.dumps(document, indent=2))
    return 0
