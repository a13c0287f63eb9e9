"""Seeds the local moto with a demo VPC and one EC2 instance, and prints the
instance ARN. Safe to run again: an existing demo instance is reused.

The instance's own security group has a standing SSH rule open to the world,
so that enabling JIT shows an exposure (and, with closeStandingAccess,
closes it).
"""
import os
import sys

import boto3

REGION = os.environ.get("AWS_REGION", "us-east-1")
ec2 = boto3.client("ec2", region_name=REGION)


def existing():
    found = ec2.describe_instances(
        Filters=[{"Name": "tag:Name", "Values": ["jitvm-demo"]},
                 {"Name": "instance-state-name", "Values": ["pending", "running", "stopped"]}])
    for reservation in found["Reservations"]:
        for instance in reservation["Instances"]:
            return reservation["OwnerId"], instance["InstanceId"]
    return None


def create():
    vpc = ec2.create_vpc(CidrBlock="10.20.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.20.1.0/24")["Subnet"]["SubnetId"]
    web = ec2.create_security_group(GroupName="demo-web", Description="demo web server", VpcId=vpc)["GroupId"]
    ec2.authorize_security_group_ingress(GroupId=web, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22,
         "IpRanges": [{"CidrIp": "0.0.0.0/0", "Description": "legacy ssh from anywhere"}]},
        {"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443,
         "IpRanges": [{"CidrIp": "0.0.0.0/0", "Description": "https"}]},
    ])
    image = ec2.describe_images()["Images"][0]["ImageId"]
    reservation = ec2.run_instances(
        ImageId=image, MinCount=1, MaxCount=1, SubnetId=subnet, SecurityGroupIds=[web],
        TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": "jitvm-demo"}]}])
    return reservation["OwnerId"], reservation["Instances"][0]["InstanceId"]


def main():
    owner, instance = existing() or create()
    print(f"arn:aws:ec2:{REGION}:{owner}:instance/{instance}")


if __name__ == "__main__":
    sys.exit(main())
