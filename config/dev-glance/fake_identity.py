"""Paste filter that stands in for keystonemiddleware in the local development and test Glance.

Unless the request already says who it is (X-Identity-Status), it gets a fixed,
confirmed identity. Glance's own ContextMiddleware then builds the same request
context it would build behind Keystone, so images get a real owner and the
policies are the ones a Keystone user meets. A test acts as another project by
sending X-Identity-Status: Confirmed, X-Project-Id, X-User-Id and X-Roles itself.

It trusts whatever identity headers a client sends: development and tests only.
"""


def filter_factory(global_conf, **local_conf):
    project_id = local_conf.get('project_id', 'test-project')
    user_id = local_conf.get('user_id', 'test-user')
    identity = {
        'HTTP_X_IDENTITY_STATUS': 'Confirmed',
        'HTTP_X_PROJECT_ID': project_id,
        'HTTP_X_TENANT_ID': project_id,
        'HTTP_X_PROJECT_NAME': local_conf.get('project_name', project_id),
        'HTTP_X_PROJECT_DOMAIN_ID': 'default',
        'HTTP_X_USER_ID': user_id,
        'HTTP_X_USER_NAME': local_conf.get('user_name', user_id),
        'HTTP_X_USER_DOMAIN_ID': 'default',
        'HTTP_X_ROLES': local_conf.get('roles', 'admin,member,reader'),
    }

    def wrap(app):
        def with_identity(environ, start_response):
            if 'HTTP_X_IDENTITY_STATUS' not in environ:
                environ.update(identity)
            return app(environ, start_response)
        return with_identity
    return wrap
