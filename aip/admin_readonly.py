"""Admin classes whose rows only the application writes: jobs, their events, backups and fixity checks."""
from __future__ import annotations


class ReadOnlyAdminMixin:
    """Admin options that show rows and never add, change or delete them.

    ``view_permission`` (for example "aip.view_job"), when set, is the permission that
    shows the rows and the admin section, instead of the model's own view permission.
    """

    view_permission: str | None = None

    def has_view_permission(self, request, obj=None) -> bool:
        if self.view_permission is None:
            return super().has_view_permission(request, obj)
        return request.user.has_perm(self.view_permission)

    def has_module_permission(self, request) -> bool:
        if self.view_permission is None:
            return super().has_module_permission(request)
        return request.user.has_perm(self.view_permission)

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
