const en = {
  app: {
    name: 'Plum',
    language: 'Language',
  },
  stream: {
    connecting: 'Connecting…',
    live: 'Live',
    reconnecting: 'Reconnecting…',
  },
  auth: {
    title: 'Access token required',
    prompt: 'This Plum controller requires an access token. It is kept in this browser.',
    rejected: 'The saved token was not accepted. Please enter a valid one.',
    placeholder: 'Access token',
    cancel: 'Cancel',
    submit: 'Save',
  },
  common: {
    loadFailed: 'Could not load: {message}',
    none: '—',
  },
  health: {
    Healthy: 'Healthy',
    Unhealthy: 'Unhealthy',
  },
  uptime: {
    d: 'd',
    h: 'h',
    m: 'm',
    s: 's',
  },
  home: {
    version: 'Version',
    role: 'Role',
    uptime: 'Uptime',
    nodes: 'Nodes',
    healthyCount: 'Healthy: {count}',
  },
  roles: {
    all: 'Controller and agent in one process',
    controller: 'Controller only',
    agent: 'Agent only',
  },
  nodes: {
    nodeId: 'Node ID',
    ip: 'IP',
    health: 'Health',
    labels: 'Labels',
    cpu: 'CPU',
    memory: 'Memory',
    capacity: 'Capacity',
    version: 'Version',
    lastSeen: 'Last seen',
    empty: 'No nodes have registered yet.',
  },
  placeholder: {
    notYet: 'This page is not built yet.',
  },
  pages: {
    home: { title: 'Home', description: 'Overview of this Plum controller.' },
    nodes: { title: 'Nodes', description: 'Machines running a Plum agent, their health and load.' },
    apps: {
      title: 'Apps',
      description: 'Uploaded application packages and container images, ready to deploy.',
    },
    deployments: {
      title: 'Deployments',
      description: 'Apps deployed onto nodes with a number of replicas; start, stop and scale them.',
    },
    instances: {
      title: 'Instances',
      description: 'The running copies of deployed apps on each node, with their phase and restarts.',
    },
    services: {
      title: 'Services',
      description: 'Service endpoints registered for discovery, and their health.',
    },
    tasks: {
      title: 'Tasks',
      description: 'Task definitions and task runs: start, cancel, rerun and read their logs.',
    },
    workers: {
      title: 'Workers',
      description: 'HTTP and gRPC workers that execute embedded tasks.',
    },
    workflows: {
      title: 'Workflows',
      description: 'Sequential and DAG workflows, their versions, and running them.',
    },
    runs: {
      title: 'Runs',
      description: 'Workflow runs with the state, timing and result of every node.',
    },
    schedules: {
      title: 'Schedules',
      description: 'Cron schedules that run workflows, and when they run next.',
    },
    kv: {
      title: 'KV',
      description: 'The key-value store: namespaces, typed values and revisions.',
    },
    resources: {
      title: 'Resources',
      description: 'External devices, their reported state history and operations.',
    },
  },
}

export type Messages = typeof en
export default en
