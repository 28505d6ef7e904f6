import type { Messages } from './en'

const zh: Messages = {
  app: {
    name: 'Plum',
    language: '语言',
  },
  stream: {
    connecting: '连接中…',
    live: '实时',
    reconnecting: '重新连接中…',
  },
  auth: {
    title: '需要访问令牌',
    prompt: '此 Plum 控制器需要访问令牌，令牌会保存在本浏览器中。',
    rejected: '已保存的令牌未被接受，请输入有效的令牌。',
    placeholder: '访问令牌',
    cancel: '取消',
    submit: '保存',
  },
  common: {
    loadFailed: '加载失败：{message}',
    none: '—',
  },
  health: {
    Healthy: '健康',
    Unhealthy: '不健康',
  },
  uptime: {
    d: '天',
    h: '小时',
    m: '分',
    s: '秒',
  },
  home: {
    version: '版本',
    role: '角色',
    uptime: '运行时间',
    nodes: '节点',
    healthyCount: '健康：{count}',
  },
  roles: {
    all: '控制器与代理同在一个进程',
    controller: '仅控制器',
    agent: '仅代理',
  },
  nodes: {
    nodeId: '节点 ID',
    ip: 'IP',
    health: '健康状态',
    labels: '标签',
    cpu: 'CPU',
    memory: '内存',
    capacity: '容量',
    version: '版本',
    lastSeen: '最近心跳',
    empty: '还没有节点注册。',
  },
  placeholder: {
    notYet: '此页面尚未开发。',
  },
  pages: {
    home: { title: '首页', description: '此 Plum 控制器的概览。' },
    nodes: { title: '节点', description: '运行 Plum 代理的机器，以及它们的健康状态和负载。' },
    apps: { title: '应用', description: '已上传的应用包和容器镜像，可用于部署。' },
    deployments: {
      title: '部署',
      description: '部署到节点上的应用及其副本数；可启动、停止和扩缩容。',
    },
    instances: { title: '实例', description: '各节点上已部署应用的运行副本，及其阶段和重启次数。' },
    services: { title: '服务', description: '注册用于服务发现的服务端点及其健康状态。' },
    tasks: { title: '任务', description: '任务定义和任务运行：启动、取消、重新运行并查看日志。' },
    workers: { title: '工作进程', description: '执行内嵌任务的 HTTP 和 gRPC 工作进程。' },
    workflows: { title: '工作流', description: '顺序工作流和 DAG 工作流、它们的版本以及运行。' },
    runs: { title: '运行记录', description: '工作流运行记录，含每个节点的状态、耗时和结果。' },
    schedules: { title: '定时计划', description: '按 cron 表达式运行工作流的定时计划及下次运行时间。' },
    kv: { title: '键值存储', description: '键值存储：命名空间、带类型的值和版本号。' },
    resources: { title: '资源', description: '外部设备、其上报的状态历史和操作。' },
  },
}

export default zh
