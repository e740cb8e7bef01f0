"""A generated Chinese corpus for `make demo-zh` and the tests: no download, a few seconds.

`documents(n, seed)` yields `{"id", "text", "source"}` records: prose about one of four topics
(体育 sports, 科技 technology, 美食 food, 旅行 travel), with `source` = `zh-demo:<topic>` (the demo
task's label, as `python-docs:<package>` is for the English demo). Only the nouns carry the topic:
subjects, verbs, adjectives, sentence forms and the topic-neutral sentences mixed in are shared.
Each topic has about 60 nouns, drawn with Zipf weights (1/rank), so a few are frequent and most
are rare. That is what makes pretraining worth something on the demo task (configs/zh/demo-task.yaml):
20 labelled extracts per topic show the frequent nouns, while many test extracts name only rare
ones; a model can place those only by what pretraining taught it, that they occur in documents
next to the frequent nouns of their topic (a document keeps to one topic). Some characters are
shared across topics (机 in 手机 and 飞机, 网 in 网络 and 网球), so characters alone do not always tell.

`ui_strings`, `poems` and `mixed` give the other kinds of real text the clean tests use.

    python -c "from mlmctl.zh_corpus import write_jsonl; write_jsonl('data/zh-demo.jsonl', 4000)"
"""

from __future__ import annotations

import json
import random
from pathlib import Path

TOPICS = {
    # Each topic's nouns, most frequent first (documents draw them with Zipf weights 1/rank).
    "体育": "足球 比赛 球队 教练 冠军 篮球 运动员 联赛 进球 决赛 训练 体育馆 球迷 裁判 奥运会 游泳 跑步 "
          "马拉松 网球 乒乓球 排球 金牌 队长 球场 主场 客场 比分 赛季 世界杯 田径 射门 点球 后卫 前锋 "
          "守门员 跳高 举重 拳击 滑雪 体操 羽毛球 银牌 铜牌 半决赛 加时赛 犯规 助攻 篮板 扣篮 替补 "
          "转会 俱乐部 锦标赛 预选赛 赛道 泳池 健身房 跳远 击剑 记分牌",
    "科技": "电脑 手机 软件 芯片 网络 数据 程序 人工智能 机器人 算法 服务器 工程师 操作系统 互联网 "
          "屏幕 电池 数据库 云计算 代码 硬件 处理器 卫星 实验室 传感器 网站 键盘 鼠标 内存 硬盘 显卡 "
          "路由器 浏览器 编程 漏洞 黑客 密码 无人机 火箭 显示器 摄像头 蓝牙 固件 补丁 编译器 主板 光纤 "
          "基站 半导体 晶体管 量子计算 区块链 虚拟现实 集成电路 搜索引擎 开源项目 笔记本电脑 服务器机房",
    "美食": "饺子 米饭 面条 火锅 豆腐 包子 烤鸭 蔬菜 水果 厨师 餐厅 酱油 辣椒 牛肉 鸡蛋 菜单 早餐 "
          "午餐 晚餐 甜点 月饼 小吃 厨房 食材 米粉 馒头 饭馆 汤圆 粽子 馄饨 炒饭 烧烤 凉菜 红烧肉 "
          "糖醋排骨 宫保鸡丁 麻婆豆腐 小笼包 煎饼 油条 豆浆 奶茶 咖啡 蛋糕 面包 巧克力 冰淇淋 海鲜 "
          "羊肉串 酸菜鱼 调料 食谱 砂锅 蒸笼 炒锅 菜刀 米酒 白酒 桂花糕",
    "旅行": "飞机 火车 酒店 景点 护照 行李 导游 长城 海边 山区 地图 门票 机场 车站 游客 古镇 博物馆 "
          "寺庙 签证 风景 公园 湖泊 高铁 背包 旅馆 码头 乡村 草原 沙漠 航班 登机牌 行程 旅行社 民宿 "
          "度假村 海滩 瀑布 峡谷 雪山 森林 岛屿 游轮 缆车 索道 纪念品 明信片 导航 自驾游 露营 帐篷 "
          "故宫 西湖 黄山 兵马俑 布达拉宫 丽江 桂林 九寨沟 敦煌 青年旅舍",
}
# Shared by every topic, so only the nouns carry the topic: a classifier must know which nouns go
# together, which the labelled examples show for the frequent ones and pretraining for the rest.
VERBS = "提到了 谈起了 看到了 想起了 讨论了 介绍了 关注 说起了 记录了 比较了 喜欢 打听了".split()
SUBJECTS = "我们 他 她 记者 专家 很多人 这位老师 我的朋友 年轻人 当地居民 学生们 一家公司".split()
TIMES = "昨天 今天上午 去年 今年春天 上个星期 周末 最近 晚上 每年夏天 那一天".split()
ADJ = "非常好 很有意思 不太容易 特别重要 越来越受欢迎 十分难忘 比以前更好 让人满意".split()
NEUTRAL = [
    "大家都觉得这件事值得讨论。", "其实很多问题并没有简单的答案。", "这是一个普通的日子。",
    "天气不错，阳光很好。", "他们一边说话一边喝水。", "后来的事情谁也没有想到。",
    "时间过得很快。", "有人同意，也有人反对。", "这个消息很快传开了。", "我们下次再聊吧。",
]
POEM_CHARS = "春风花月夜山水江河云雨雪天地人心长明白红青秋冬日光远近高楼古道西东南北来去归思故乡行"
UI = [
    "确定", "取消", "打开文件", "保存(&S)", "另存为(&A)...", "访问已被拒绝", "文件不存在", "正在下载更新",
    "请输入密码", "网络连接失败，请稍后重试", "是否删除所选项目？", "设置", "帮助", "关于本程序", "复制链接",
    "显示隐藏文件", "无法连接到服务器", "操作成功完成", "用户名或密码错误", "选择语言",
]
ENGLISH = "Python GitHub Linux API JSON Docker Wi-Fi CPU iPhone Google".split()


def _nouns(topic: str) -> list[str]:
    return TOPICS[topic].split()


def _zipf(n: int) -> list[float]:
    return [1 / rank for rank in range(1, n + 1)]


def _sentence(rng: random.Random, topic: str) -> str:
    nouns = _nouns(topic)
    n1 = n2 = rng.choices(nouns, weights=_zipf(len(nouns)))[0]
    while n2 == n1:
        n2 = rng.choices(nouns, weights=_zipf(len(nouns)))[0]
    subj, verb, adj = rng.choice(SUBJECTS), rng.choice(VERBS), rng.choice(ADJ)
    form = rng.randrange(5)
    if form == 0:
        return f"{rng.choice(TIMES)}，{subj}{verb}{n1}和{n2}。"
    if form == 1:
        return f"{subj}认为{n1}{adj}。"
    if form == 2:
        return f"关于{n1}的{n2}，{subj}说{adj}！"
    if form == 3:
        return f"{subj}{verb}{n1}，觉得{n2}{adj}。"
    return f"{n1}和{n2}都是{subj}常常说起的话题。"


def document(rng: random.Random, topic: str) -> str:
    parts = [_sentence(rng, topic) if rng.random() < 0.8 else rng.choice(NEUTRAL)
             for _ in range(rng.randint(3, 8))]
    return "".join(parts)


def documents(n: int, seed: int = 0):
    """n topic documents, topics in turn, deterministic for a seed."""
    rng = random.Random(seed)
    names = sorted(TOPICS)
    for i in range(n):
        topic = names[i % len(names)]
        yield {"id": f"zh-{i:06d}", "text": document(rng, topic), "source": f"zh-demo:{topic}"}


def poems(n: int, seed: int = 0) -> list[str]:
    """Regulated-verse-like quatrains: four lines of 5 or 7 characters."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        k = rng.choice((5, 7))
        lines = ["".join(rng.choices(POEM_CHARS, k=k)) + ("，" if j % 2 == 0 else "。") for j in range(4)]
        out.append("\n".join(lines))
    return out


def ui_strings() -> list[str]:
    return list(UI)


def mixed(n: int, seed: int = 0) -> list[str]:
    """Chinese sentences with English product and technical names in them."""
    rng = random.Random(seed)
    return [f"{rng.choice(SUBJECTS)}用 {rng.choice(ENGLISH)} {rng.choice(VERBS)}"
            f"一个新的{rng.choice(_nouns('科技'))}，{rng.choice(ADJ)}。" for _ in range(n)]


def write_jsonl(path: str | Path, n: int, seed: int = 0) -> None:
    """The demo corpus as JSON lines (`text` and `source` fields), written atomically."""
    from mlmctl.shards import atomic_write_text

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(path), "".join(json.dumps(d, ensure_ascii=False) + "\n" for d in documents(n, seed)))
