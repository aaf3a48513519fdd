"""``manage.py build_demo_repository``: fill an empty repository with demo content."""
from django.core.management.base import BaseCommand, CommandError

from repository.demo import demo_repository_build
from repository.models import Community


class Command(BaseCommand):
    help = (
        "Create demo content in an empty repository: nested communities, collections with groups, "
        "a logo and an item template, items with ORIGINAL, TEXT and LICENSE bundles, a mapped item, "
        "a withdrawn item, an embargo, and non-ASCII metadata."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--seed", type=int, default=7, help="Seed of the generated content (default 7).")
        parser.add_argument("--items", type=int, default=3, help="Items per collection (default 3).")

    def handle(self, *args, **options) -> None:
        if Community.objects.exists():
            raise CommandError("The repository already has communities; build the demo into an empty database.")
        summary = demo_repository_build(seed=options["seed"], items_per_collection=options["items"])
        self.stdout.write(
            f"Built {summary.communities} communities, {summary.collections} collections, {summary.items} items "
            f"with {summary.bitstreams} files, {summary.people} people and {summary.groups} groups."
        )
