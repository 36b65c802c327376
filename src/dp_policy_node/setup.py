from setuptools import find_packages, setup

PACKAGE_NAME = "dp_policy_node"

setup(
    name=PACKAGE_NAME,
    version="0.1.0",
    packages=find_packages(exclude=["test"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE_NAME}"]),
        (f"share/{PACKAGE_NAME}", ["package.xml"]),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="Diffusion Policy ROS maintainers",
    maintainer_email="maintainers@example.org",
    description=(
        "The inference node: serves a dp_policy checkpoint as latency-compensated "
        "JointTrajectory action chunks."
    ),
    license="Apache-2.0",
    extras_require={"test": ["pytest"]},
    entry_points={"console_scripts": ["policy_node = dp_policy_node.policy_node:main"]},
)
