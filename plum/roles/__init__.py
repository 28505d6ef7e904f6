from plum.roles.base import ReadyInfo, Role, build_role

__all__ = ["ReadyInfo", "Role", "build_role"]
